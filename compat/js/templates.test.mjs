// Custom templates through the official JS SDK (e2b 2.51.0): build, cache, create.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Sandbox, Template, waitForPort } from 'e2b'

const url = process.env.SOULBOX_URL ?? 'http://127.0.0.1:3000'
process.env.E2B_API_URL = url
process.env.E2B_SANDBOX_URL = url
delete process.env.E2B_DEBUG

test('a template built with the JS SDK starts with its files, env, user and server', async () => {
  const ctx = mkdtempSync(join(tmpdir(), 'soulbox-js-'))
  const name = `compat-js-${Math.random().toString(36).slice(2, 10)}`
  mkdirSync(join(ctx, 'site'))
  writeFileSync(join(ctx, 'site', 'index.html'), `hello from ${name}\n`)
  const t = Template({ fileContextPath: ctx })
    .fromTemplate('base')
    .setEnvs({ SITE: name })
    .runCmd('mkdir -p /srv && echo ran > /srv/ran', { user: 'root' })
    .copy('site', '/home/user/site/')
    .setWorkdir('/home/user/site')
    .setUser('user')
    .setStartCmd('python3 -m http.server 8081', waitForPort(8081))
  const logs = []
  await Template.build(t, name, { onBuildLogs: (l) => logs.push(String(l.message)) })
  assert.ok(logs.some((l) => l.includes('RUN mkdir -p /srv')), logs.join('\n'))
  const sbx = await Sandbox.create(name)
  try {
    const r = await sbx.commands.run('cat /srv/ran; echo $SITE; pwd; whoami; curl -s localhost:8081/index.html')
    assert.equal(r.stdout, `ran\n${name}\n/home/user/site\nuser\nhello from ${name}\n`)
  } finally {
    await sbx.kill()
  }
  // The same template again: every step comes from the cache.
  const again = []
  await Template.build(t, name, { onBuildLogs: (l) => again.push(String(l.message)) })
  assert.equal(again.filter((l) => l === 'CACHED').length, 2, again.join('\n'))
})
