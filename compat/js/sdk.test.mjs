// Drives the official, unmodified E2B JS SDK against a running `soulbox serve`.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Sandbox, CommandExitError, NotFoundError, TimeoutError } from 'e2b'

const url = process.env.SOULBOX_URL ?? 'http://127.0.0.1:3000'
process.env.E2B_API_URL = url
process.env.E2B_SANDBOX_URL = url
process.env.E2B_API_KEY ??= 'e2b_0123456789abcdef0123456789abcdef01234567'
delete process.env.E2B_DEBUG
const template = process.env.SOULBOX_COMPAT_TEMPLATE ?? 'base'

test('sandbox lifecycle, metadata, env vars, list', async () => {
  const sbx = await Sandbox.create(template, { metadata: { lang: 'js' }, envs: { G: 'g1' }, timeoutMs: 60_000 })
  try {
    const info = await sbx.getInfo()
    assert.equal(info.sandboxId, sbx.sandboxId)
    assert.deepEqual(info.metadata, { lang: 'js' })
    assert.equal((await sbx.commands.run('echo $G')).stdout, 'g1\n')
    const same = await Sandbox.connect(sbx.sandboxId)
    assert.equal((await same.commands.run('hostname')).stdout.trim(), sbx.sandboxId)
    const listed = await Sandbox.list({ query: { metadata: { lang: 'js' } } }).nextItems()
    assert.ok(listed.some((s) => s.sandboxId === sbx.sandboxId))
    await sbx.setTimeout(120_000)
    assert.equal(await sbx.isRunning(), true)
  } finally {
    await sbx.kill()
  }
  assert.equal(await sbx.isRunning(), false)
})

test('commands: run, exit codes, background, stdin, kill', async () => {
  const sbx = await Sandbox.create(template, { timeoutMs: 60_000 })
  try {
    const r = await sbx.commands.run('echo out; echo err >&2; pwd', { cwd: '/tmp' })
    assert.equal(r.stdout, 'out\n/tmp\n')
    assert.equal(r.stderr, 'err\n')
    await assert.rejects(sbx.commands.run('exit 5'), (e) => e instanceof CommandExitError && e.exitCode === 5)
    const chunks = []
    await sbx.commands.run('for i in 1 2; do echo $i; sleep 0.1; done', { onStdout: (d) => chunks.push(d) })
    assert.equal(chunks.join(''), '1\n2\n')
    const bg = await sbx.commands.run('cat', { background: true, stdin: true })
    await sbx.commands.sendStdin(bg.pid, 'piped\n')
    assert.ok((await sbx.commands.list()).some((p) => p.pid === bg.pid))
    assert.equal(await sbx.commands.kill(bg.pid), true)
    await assert.rejects(bg.wait())
    assert.equal(await sbx.commands.kill(bg.pid), false)
  } finally {
    await sbx.kill()
  }
})

test('files: write, read, list, rename, remove, watch, signed urls', async () => {
  const sbx = await Sandbox.create(template, { timeoutMs: 60_000 })
  try {
    await sbx.files.write('/home/user/j/a.txt', 'alpha')
    await sbx.files.write([{ path: '/home/user/j/b.txt', data: 'beta' }])
    assert.equal(await sbx.files.read('/home/user/j/a.txt'), 'alpha')
    assert.deepEqual((await sbx.files.list('/home/user/j')).map((e) => e.name).sort(), ['a.txt', 'b.txt'])
    assert.equal(await sbx.files.exists('/home/user/j/none'), false)
    assert.equal(await sbx.files.makeDir('/home/user/j/d'), true)
    await sbx.files.rename('/home/user/j/b.txt', '/home/user/j/d/c.txt')
    assert.equal((await sbx.files.getInfo('/home/user/j/d/c.txt')).size, 4)
    await sbx.files.remove('/home/user/j/d')
    await assert.rejects(sbx.files.read('/home/user/j/d/c.txt'), NotFoundError)

    const events = []
    const w = await sbx.files.watchDir('/home/user/j', (e) => events.push(e))
    await sbx.files.write('/home/user/j/watched.txt', 'x')
    for (let i = 0; i < 50 && !events.some((e) => e.name === 'watched.txt'); i++) await new Promise((r) => setTimeout(r, 100))
    await w.stop()
    assert.ok(events.some((e) => e.name === 'watched.txt'))

    const dl = await sbx.downloadUrl('/home/user/j/a.txt')
    assert.equal(await (await fetch(dl)).text(), 'alpha')
    const up = await sbx.uploadUrl('/home/user/j/up.txt')
    const res = await fetch(up, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: 'up!' })
    assert.equal(res.status, 200)
    assert.equal(await sbx.files.read('/home/user/j/up.txt'), 'up!')
  } finally {
    await sbx.kill()
  }
})

test('pty: input, resize, kill', async () => {
  const sbx = await Sandbox.create(template, { timeoutMs: 60_000 })
  try {
    const dec = new TextDecoder()
    let out = ''
    const h = await sbx.pty.create({ cols: 80, rows: 24, onData: (d) => { out += dec.decode(d) } })
    await sbx.pty.resize(h.pid, { cols: 100, rows: 30 })
    await sbx.pty.sendInput(h.pid, new TextEncoder().encode('stty size; echo marker-$((6*7))\n'))
    for (let i = 0; i < 100 && !out.includes('marker-42'); i++) await new Promise((r) => setTimeout(r, 100))
    assert.match(out, /30 100/)
    assert.match(out, /marker-42/)
    assert.equal(await sbx.pty.kill(h.pid), true)
  } finally {
    await sbx.kill()
  }
})

test('a sandbox killed mid-command: a TimeoutError, not a broken connection', async () => {
  const sbx = await Sandbox.create(template, { timeoutMs: 60_000 })
  const killer = new Promise((r) => setTimeout(r, 1000)).then(() => Sandbox.kill(sbx.sandboxId))
  await assert.rejects(sbx.commands.run('echo started; sleep 30'), (e) => {
    assert.ok(e instanceof TimeoutError, `${e?.constructor?.name}: ${e?.message}`)
    return true
  })
  await killer
})

test('durable: pause to disk and resume by connect, snapshot, fork', async () => {
  const sbx = await Sandbox.create(template, { timeoutMs: 120_000 })
  const made = []
  try {
    await sbx.files.write('/home/user/keep.txt', 'kept')
    await sbx.commands.run('nohup sleep 100000 >/dev/null 2>&1 &')
    assert.equal(await sbx.pause(), true)
    assert.equal((await sbx.getInfo()).state, 'paused')
    assert.equal(await sbx.pause(), false) // already paused: 409
    const resumed = await Sandbox.connect(sbx.sandboxId)
    assert.equal(await resumed.files.read('/home/user/keep.txt'), 'kept')
    // Memory kept (a full pause, with the CRIU scripts/install.sh builds): the sleep runs on.
    assert.equal((await resumed.commands.run('pgrep -c sleep || true')).stdout, '1\n')
    assert.equal(await resumed.pause({ keepMemory: false }), true)
    const rebooted = await Sandbox.connect(sbx.sandboxId)
    assert.equal((await rebooted.commands.run('pgrep -c sleep || true')).stdout, '0\n') // files only
    await resumed.commands.run('nohup sleep 100000 >/dev/null 2>&1 &')
    const snap = await resumed.createSnapshot()
    const listed = await Sandbox.listSnapshots({ sandboxId: sbx.sandboxId }).nextItems()
    assert.ok(listed.some((s) => s.snapshotId === snap.snapshotId), JSON.stringify(listed))
    const fromSnap = await Sandbox.create(snap.snapshotId, { timeoutMs: 60_000 })
    made.push(fromSnap)
    assert.equal(await fromSnap.files.read('/home/user/keep.txt'), 'kept')
    const forks = await resumed.fork({ count: 2 })
    assert.equal(forks.filter((f) => f instanceof Error).length, 0, String(forks))
    made.push(...forks)
    for (const f of forks) assert.equal(await f.files.read('/home/user/keep.txt'), 'kept')
    await forks[0].files.write('/home/user/keep.txt', 'changed in a child')
    assert.equal(await resumed.files.read('/home/user/keep.txt'), 'kept')
    assert.equal((await resumed.commands.run('pgrep -c sleep')).stdout, '1\n') // the parent runs on
    assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId), true)
  } finally {
    for (const s of [...made, sbx]) await s.kill()
  }
})
