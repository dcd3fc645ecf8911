//! Durations ("30s", "5m", "1h30m") and sizes (1048576, "1MiB") as operators write them.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::time::Duration;

/// A duration written with units: `500ms`, `30s`, `5m`, `1h`, `2d`, or several (`1h30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!("'{s}' is not a duration: write it with a unit, e.g. \"30s\", \"5m\", \"1h\", \"500ms\"")
    };
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let one = match rest[..unit].trim() {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86400),
            _ => return Err(bad()),
        };
        total = one
            .checked_mul(u32::try_from(n).map_err(|_| bad())?)
            .and_then(|d| total.checked_add(d))
            .ok_or_else(bad)?;
        rest = &rest[unit..];
    }
    Ok(total)
}

/// The shortest exact spelling: `90s` stays `90s`, `3600s` is `1h`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    for (unit, n) in [("d", 86400), ("h", 3600), ("m", 60)] {
        if s.is_multiple_of(n) {
            return format!("{}{unit}", s / n);
        }
    }
    format!("{s}s")
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(self.0))
    }
}

impl std::str::FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_duration(s).map(Dur)
    }
}

/// A size in bytes: a number, or a string with a binary unit (`"512KiB"`, `"1MiB"`, `"2GiB"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let bad =
        || format!("'{s}' is not a size: write bytes, or e.g. \"512KiB\", \"1MiB\", \"2GiB\"");
    let n: u64 = t[..split].parse().map_err(|_| bad())?;
    let shift = match t[split..].trim() {
        "" | "B" => 0,
        "KiB" | "K" => 10,
        "MiB" | "M" => 20,
        "GiB" | "G" => 30,
        _ => return Err(bad()),
    };
    n.checked_mul(1 << shift).ok_or_else(bad)
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)
            .map_err(|_| serde::de::Error::custom("expected a size: bytes, or e.g. \"1MiB\""))?
        {
            Raw::N(n) => Ok(Size(n)),
            Raw::S(s) => parse_size(&s).map(Size).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            n if n > 0 && n % (1 << 30) == 0 => s.serialize_str(&format!("{}GiB", n >> 30)),
            n if n > 0 && n % (1 << 20) == 0 => s.serialize_str(&format!("{}MiB", n >> 20)),
            n if n > 0 && n % (1 << 10) == 0 => s.serialize_str(&format!("{}KiB", n >> 10)),
            n => s.serialize_u64(n),
        }
    }
}

impl std::str::FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_size(s).map(Size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_and_print_back() {
        let d = |s| parse_duration(s).unwrap();
        assert_eq!(d("30s"), Duration::from_secs(30));
        assert_eq!(d("5m"), Duration::from_secs(300));
        assert_eq!(d("1h30m"), Duration::from_secs(5400));
        assert_eq!(d("250ms"), Duration::from_millis(250));
        assert_eq!(d("2d"), Duration::from_secs(172_800));
        for bad in ["", "30", "s", "5 minutes", "-1s", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        for s in ["30s", "90s", "5m", "1h", "250ms", "2d", "0s"] {
            assert_eq!(format_duration(d(s)), s);
        }
    }

    #[test]
    fn sizes_read_and_print_back() {
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("512KiB").unwrap(), 512 << 10);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("1MB").is_err());
        assert!(parse_size("lots").is_err());
        #[derive(Deserialize, Serialize)]
        struct W {
            v: Size,
        }
        let w: W = toml::from_str("v = \"2GiB\"").unwrap();
        assert_eq!(w.v, Size(2 << 30));
        assert_eq!(toml::to_string(&w).unwrap().trim(), "v = \"2GiB\"");
        let w: W = toml::from_str("v = 1000").unwrap();
        assert_eq!(toml::to_string(&w).unwrap().trim(), "v = 1000");
    }
}
