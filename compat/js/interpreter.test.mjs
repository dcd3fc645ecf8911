// Drives the official, unmodified @e2b/code-interpreter JS SDK against `soulbox serve`.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Sandbox } from '@e2b/code-interpreter'

const url = process.env.SOULBOX_URL ?? 'http://127.0.0.1:3000'
process.env.E2B_API_URL = url
process.env.E2B_SANDBOX_URL = url
process.env.E2B_API_KEY ??= 'e2b_0123456789abcdef0123456789abcdef01234567'
delete process.env.E2B_DEBUG

test('runCode: state, streaming, errors, images, contexts, env vars', async () => {
  const sbx = await Sandbox.create({ timeoutMs: 120_000 })
  try {
    const out = []
    let ex = await sbx.runCode("x = 20\nprint('hi')\nx * 2", { onStdout: (m) => out.push(m.line) })
    assert.equal(ex.text, '40')
    assert.deepEqual(out, ['hi\n'])
    assert.equal((await sbx.runCode('x + 1')).text, '21')
    ex = await sbx.runCode('raise ValueError("bad")')
    assert.equal(ex.error.name, 'ValueError')
    assert.equal(ex.error.value, 'bad')
    ex = await sbx.runCode("import matplotlib.pyplot as plt\nplt.plot([3, 1, 2])\nplt.show()")
    assert.ok(ex.results.some((r) => r.png))
    const ctx = await sbx.createCodeContext({ cwd: '/tmp' })
    assert.equal((await sbx.runCode('import os; os.getcwd()', { context: ctx })).text, '/tmp')
    assert.equal((await sbx.runCode('x', { context: ctx })).error.name, 'NameError')
    assert.equal((await sbx.runCode("import os; os.environ['E']", { envs: { E: 'v' } })).text, 'v')
  } finally {
    await sbx.kill()
  }
})

test('runCode: JavaScript and TypeScript contexts', async () => {
  const sbx = await Sandbox.create({ timeoutMs: 120_000 })
  try {
    const languages = (await sbx.listCodeContexts()).map((c) => c.language).sort()
    assert.deepEqual(languages, ['javascript', 'python'])
    assert.equal((await sbx.runCode('const x = 1', { language: 'js' })).error, undefined)
    const out = []
    let ex = await sbx.runCode("console.log('hi'); x + 1", { language: 'js', onStdout: (m) => out.push(m.line) })
    assert.equal(ex.text, '2')
    assert.deepEqual(out, ['hi\n'])
    assert.deepEqual(ex.logs.stdout, ['hi\n'])
    ex = await sbx.runCode("throw new RangeError('too far')", { language: 'js' })
    assert.equal(ex.error.name, 'RangeError')
    assert.equal(ex.error.value, 'too far')
    // The default JavaScript context's kernel goes first: 512 MiB hold one Deno kernel.
    const js = (await sbx.listCodeContexts()).find((c) => c.language === 'javascript')
    await sbx.removeCodeContext(js)
    const ctx = await sbx.createCodeContext({ language: 'ts' })
    assert.equal(ctx.language, 'typescript')
    ex = await sbx.runCode('const n: number = 41;\nn + 1', { context: ctx })
    assert.equal(ex.text, '42')
    assert.equal((await sbx.runCode('n', { context: ctx })).text, '41')
    await sbx.removeCodeContext(ctx)
  } finally {
    await sbx.kill()
  }
})
