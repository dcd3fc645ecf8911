//! Per-sandbox samples over time: a bounded ring each, and the CPU percent between two
//! readings of the cgroup's usage counter.

use std::collections::VecDeque;

/// One reading of a sandbox, as `get_metrics()` and the stream give it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at_ms: i64,
    /// Percent of the sandbox's CPU allotment used since the reading before (0..=100).
    pub cpu_pct: f32,
    /// Whole CPUs of the allotment (E2B's `cpuCount`).
    pub cpu_count: u32,
    /// CPU time used since the cgroup was made.
    pub cpu_ns: u64,
    pub mem_used: u64,
    pub mem_total: u64,
    pub mem_cache: u64,
    pub disk_used: u64,
    pub disk_total: u64,
    pub net_rx: u64,
    pub net_tx: u64,
}

/// What a percent is computed from: the usage counter at a time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub at_ms: i64,
    pub cpu_ns: u64,
}

/// The percent of `cpus` (fractional: a 0.5 CPU quota fully used is 100 %) used between
/// `before` and `now`. A counter that went back (the sandbox booted again on its files, a new
/// cgroup) counts from zero at `before`.
pub fn cpu_pct(before: Reading, now: Reading, cpus: f64) -> f32 {
    let wall_ns = (now.at_ms - before.at_ms).max(1) as f64 * 1e6;
    let used = if now.cpu_ns >= before.cpu_ns {
        now.cpu_ns - before.cpu_ns
    } else {
        now.cpu_ns
    } as f64;
    (used / wall_ns / cpus.max(0.001) * 100.0).clamp(0.0, 100.0) as f32
}

/// The samples of one sandbox, oldest first, at most `cap` of them.
#[derive(Debug)]
pub struct Ring {
    samples: VecDeque<Sample>,
    cap: usize,
    /// The reading the next percent is computed from; none after a pause (the counter and
    /// the clock moved apart while it was not sampled).
    pub last: Option<Reading>,
}

impl Ring {
    pub fn new(cap: usize) -> Ring {
        Ring {
            samples: VecDeque::new(),
            cap: cap.max(1),
            last: None,
        }
    }

    pub fn push(&mut self, s: Sample) {
        if self.samples.len() == self.cap {
            self.samples.pop_front();
        }
        self.last = Some(Reading {
            at_ms: s.at_ms,
            cpu_ns: s.cpu_ns,
        });
        self.samples.push_back(s);
    }

    pub fn latest(&self) -> Option<&Sample> {
        self.samples.back()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Samples taken in `[start_ms, end_ms]`, oldest first.
    pub fn range(&self, start_ms: i64, end_ms: i64) -> impl Iterator<Item = &Sample> {
        // Sorted by time: skip to the first in range without walking the older ones.
        let first = self.samples.partition_point(|s| s.at_ms < start_ms);
        self.samples
            .range(first..)
            .take_while(move |s| s.at_ms <= end_ms)
    }

    /// Samples taken after `ms`, oldest first.
    pub fn after(&self, ms: i64) -> impl Iterator<Item = &Sample> {
        self.range(ms.saturating_add(1), i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: i64) -> Sample {
        Sample {
            at_ms,
            cpu_pct: 0.0,
            cpu_count: 1,
            cpu_ns: at_ms as u64,
            mem_used: 0,
            mem_total: 0,
            mem_cache: 0,
            disk_used: 0,
            disk_total: 0,
            net_rx: 0,
            net_tx: 0,
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_cap_samples() {
        let mut r = Ring::new(3);
        assert!(r.is_empty() && r.latest().is_none());
        for t in 1..=5 {
            r.push(sample(t * 1000));
        }
        let kept: Vec<i64> = r.range(i64::MIN, i64::MAX).map(|s| s.at_ms).collect();
        assert_eq!(kept, [3000, 4000, 5000]);
        assert_eq!(r.latest().map(|s| s.at_ms), Some(5000));
        assert_eq!(
            r.last,
            Some(Reading {
                at_ms: 5000,
                cpu_ns: 5000
            })
        );
    }

    #[test]
    fn ranges_are_inclusive_and_after_is_not() {
        let mut r = Ring::new(10);
        for t in 1..=5 {
            r.push(sample(t * 1000));
        }
        let got = |it: &mut dyn Iterator<Item = &Sample>| it.map(|s| s.at_ms).collect::<Vec<_>>();
        assert_eq!(got(&mut r.range(2000, 4000)), [2000, 3000, 4000]);
        assert_eq!(got(&mut r.range(2500, 2600)), Vec::<i64>::new());
        assert_eq!(got(&mut r.range(6000, 9000)), Vec::<i64>::new());
        assert_eq!(got(&mut r.after(3000)), [4000, 5000]);
    }

    #[test]
    fn cpu_percent_is_over_the_interval_and_of_the_allotment() {
        let at = |at_ms, cpu_ns| Reading { at_ms, cpu_ns };
        // Half a second of CPU in one second, one CPU: 50 %.
        assert_eq!(cpu_pct(at(0, 0), at(1000, 500_000_000), 1.0), 50.0);
        // The same on two CPUs: 25 %; on a half-CPU quota: all of it.
        assert_eq!(cpu_pct(at(0, 0), at(1000, 500_000_000), 2.0), 25.0);
        assert_eq!(cpu_pct(at(0, 0), at(1000, 500_000_000), 0.5), 100.0);
        // Only what was used in the interval counts, not what came before it.
        assert_eq!(
            cpu_pct(at(10_000, 9_000_000_000), at(11_000, 9_000_000_000), 1.0),
            0.0
        );
        // A counter that went back (a new cgroup) counts from zero; never above 100 %.
        assert_eq!(
            cpu_pct(at(0, 900_000_000), at(1000, 250_000_000), 1.0),
            25.0
        );
        assert_eq!(cpu_pct(at(0, 0), at(1000, 5_000_000_000), 1.0), 100.0);
        // No time between the readings: no division by zero.
        assert!(cpu_pct(at(5, 0), at(5, 10), 1.0).is_finite());
    }
}
