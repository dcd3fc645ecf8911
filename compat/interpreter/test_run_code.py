import time

from e2b_code_interpreter import Sandbox


def test_state_persists_and_results(sbx):
    ex = sbx.run_code("x = 41\nprint('hello')\nx + 1")
    assert ex.logs.stdout == ["hello\n"]
    assert ex.text == "42"
    assert ex.error is None
    first = ex.execution_count
    ex = sbx.run_code("x")
    assert ex.text == "41"
    assert ex.execution_count == first + 1


def test_errors_have_name_value_traceback(sbx):
    ex = sbx.run_code("def f():\n    return 1/0\nf()")
    assert ex.error.name == "ZeroDivisionError"
    assert ex.error.value == "division by zero"
    assert "f()" in ex.error.traceback


def test_streaming_callbacks_fire_before_the_end(sbx):
    seen = []
    start = time.time()
    sbx.run_code(
        "import time, sys\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.3)\nprint('err', file=sys.stderr)",
        on_stdout=lambda m: seen.append((time.time() - start, m.line)),
        on_stderr=lambda m: seen.append((time.time() - start, "E" + m.line)),
    )
    assert [line for _, line in seen] == ["0\n", "1\n", "2\n", "Eerr\n"]
    assert seen[0][0] < seen[2][0] - 0.3, "stdout was not streamed as produced"


def test_display_data_and_images(sbx):
    ex = sbx.run_code("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.title('t')\nplt.show()")
    pngs = [r for r in ex.results if r.png]
    assert pngs and not pngs[0].is_main_result
    ex = sbx.run_code("from IPython.display import HTML, Markdown, display\ndisplay(HTML('<b>hi</b>'))\nMarkdown('# title')")
    assert ex.results[0].html == "<b>hi</b>"
    assert ex.results[-1].markdown == "# title" and ex.results[-1].is_main_result


def test_contexts_are_separate_with_their_own_cwd(sbx):
    ctx = sbx.create_code_context(cwd="/tmp")
    assert sbx.run_code("import os; os.getcwd()", context=ctx).text == "/tmp"
    assert sbx.run_code("x", context=ctx).error.name == "NameError"
    assert ctx.id in [c.id for c in sbx.list_code_contexts()]
    sbx.run_code("y = 5", context=ctx)
    sbx.restart_code_context(ctx)
    assert sbx.run_code("y", context=ctx).error.name == "NameError"
    sbx.remove_code_context(ctx)
    assert ctx.id not in [c.id for c in sbx.list_code_contexts()]


def test_env_vars_apply_to_one_execution(sbx):
    assert sbx.run_code("import os; os.environ.get('FOO')", envs={"FOO": "bar"}).text == "bar"
    assert sbx.run_code("import os; os.environ.get('FOO')").text is None


def test_timeout_interrupts_but_keeps_state(sbx):
    sbx.run_code("kept = 'still here'")
    try:
        sbx.run_code("import time\nwhile True: time.sleep(0.1)", timeout=2)
        raise AssertionError("no timeout")
    except Exception as e:
        assert "timeout" in type(e).__name__.lower() or "timed out" in str(e).lower(), e
    assert sbx.run_code("kept").text == "still here"


def test_language_and_context_together_is_an_error(sbx):
    ctx = sbx.create_code_context()
    try:
        sbx.run_code("1", context=ctx, language="python")
        raise AssertionError("accepted both")
    except Exception as e:
        assert "400" in str(e) or "context" in str(e).lower()


def test_a_dead_kernel_is_reported_and_can_be_restarted(sbx):
    ctx = sbx.create_code_context()
    ex = sbx.run_code("import os; os._exit(1)", context=ctx)
    assert ex.error is not None and ex.error.name == "UnexpectedEndOfExecution"
    assert sbx.run_code("1", context=ctx).error is not None
    sbx.restart_code_context(ctx)
    assert sbx.run_code("1 + 1", context=ctx).text == "2"
    sbx.remove_code_context(ctx)


def test_chart_data_for_matplotlib_plots(sbx):
    code = """
import matplotlib.pyplot as plt
fig, ax = plt.subplots()
ax.plot([1, 2, 3], [2, 4, 1], label="series")
ax.set_title("Line chart")
ax.set_xlabel("x")
ax.set_ylabel("y")
plt.show()
"""
    ex = sbx.run_code(code)
    charts = [r.chart for r in ex.results if r.chart]
    assert charts, ex.results
    chart = charts[0]
    assert chart.type.value == "line"
    assert chart.title == "Line chart"
    assert chart.elements[0].points[0] == (1, 2)

    ex = sbx.run_code("import matplotlib.pyplot as plt\nplt.bar(['a', 'b'], [3, 5])\nplt.title('Bars')\nplt.show()")
    chart = [r.chart for r in ex.results if r.chart][0]
    assert chart.type.value == "bar"
    assert sorted(e.value for e in chart.elements) == [3, 5]

    ex = sbx.run_code("import matplotlib.pyplot as plt\nplt.pie([1, 3], labels=['x', 'y'])\nplt.show()")
    assert [r.chart for r in ex.results if r.chart][0].type.value == "pie"

    ex = sbx.run_code("import matplotlib.pyplot as plt\nplt.scatter([1, 2, 3], [4, 5, 6])\nplt.show()")
    chart = [r.chart for r in ex.results if r.chart][0]
    assert chart.type.value == "scatter"
    assert len(chart.elements[0].points) == 3

    # As in E2B (same e2b-charts detection): boxes drawn as patches make a box-and-whisker chart.
    ex = sbx.run_code("import matplotlib.pyplot as plt\nplt.boxplot([[1, 2, 3, 4, 5], [2, 4, 6, 8, 10]], patch_artist=True)\nplt.show()")
    chart = [r.chart for r in ex.results if r.chart][0]
    assert chart.type.value == "box_and_whisker"
    assert len(chart.elements) == 2


def test_bash_kernel(sbx):
    ctx = sbx.create_code_context(language="bash")
    ex = sbx.run_code("X=7; echo hello-$X", context=ctx)
    assert ex.logs.stdout == ["hello-7\n"]
    assert sbx.run_code("echo again-$X", context=ctx).logs.stdout == ["again-7\n"]
    sbx.remove_code_context(ctx)


def test_sandbox_env_vars_reach_the_kernel():
    # The serve in compat/run.sh keeps one code-interpreter sandbox warm: this create may get
    # it, and its kernel (started before the create) must still see the create's env vars.
    from e2b_code_interpreter import Sandbox

    for i in range(2):
        s = Sandbox.create(timeout=60, envs={"SANDBOX_WIDE": f"v{i}"})
        try:
            assert s.run_code("import os; os.environ.get('SANDBOX_WIDE')").text == f"v{i}"
            assert s.commands.run("echo $SANDBOX_WIDE").stdout.strip() == f"v{i}"
        finally:
            s.kill()


def test_bash_kernel_env_vars_apply_to_one_execution(sbx):
    ctx = sbx.create_code_context(language="bash")
    assert sbx.run_code("echo $ONLY_NOW", context=ctx, envs={"ONLY_NOW": "it's here"}).logs.stdout == ["it's here\n"]
    assert sbx.run_code("echo \"[${ONLY_NOW-unset}]\"", context=ctx).logs.stdout == ["[unset]\n"]
    sbx.remove_code_context(ctx)


def test_kernel_sockets_are_private(sbx):
    assert sbx.run_code("1 + 1").text == "2"
    # The kernels' channels are unix (IPC) sockets; the only TCP listeners are loopback ones
    # (ipykernel's own pipe for output of forked subprocesses, keyed per kernel) …
    tcp = sbx.commands.run("cat /proc/net/tcp /proc/net/tcp6").stdout.splitlines()
    listening = [l.split()[1] for l in tcp if l.split()[3:4] == ["0A"]]
    loopback = ("0100007F:", "00000000000000000000000001000000:")
    assert all(a.startswith(loopback) for a in listening), listening
    # … and the channels live in directories only the kernel's user can enter.
    dirs = sbx.commands.run("ls -d /tmp/soulbox-kernel-*").stdout.split()
    assert dirs
    probe = "; ".join(f"ls {d}/ >/dev/null 2>&1 && echo open:{d}" for d in dirs) + "; true"
    assert sbx.commands.run(probe, user="nobody").stdout == ""
    assert "open:" in sbx.commands.run(probe, user="user").stdout  # positive control


def test_default_contexts_are_python_and_javascript():
    from e2b_code_interpreter import Sandbox

    s = Sandbox.create(timeout=60)  # a fresh sandbox: nothing has run yet
    try:
        languages = sorted(c.language for c in s.list_code_contexts())
        assert languages == ["javascript", "python"], languages
        js = [c for c in s.list_code_contexts() if c.language == "javascript"][0]
        assert js.cwd == "/home/user"
        # The listed default JavaScript context is the one `language="js"` runs in.
        s.run_code("const shared = 'one kernel'", context=js)
        assert s.run_code("shared", language="js").text == "one kernel"
        assert js.id in [c.id for c in s.list_code_contexts()]
    finally:
        s.kill()


def test_javascript_keeps_state_and_logs_to_stdout(sbx):
    assert sbx.run_code("const x = 1", language="js").error is None
    ex = sbx.run_code("console.log('hi', x); x + 1", language="javascript")
    assert ex.error is None, ex.error
    assert ex.logs.stdout == ["hi 1\n"]
    assert ex.text == "2"
    assert ex.results[0].is_main_result
    ex = sbx.run_code("console.error('oops'); Deno.cwd()", language="js")
    assert ex.logs.stderr == ["oops\n"]
    assert ex.text == "/home/user"


def test_javascript_errors_are_execution_errors(sbx):
    ex = sbx.run_code("function f() { throw new TypeError('bad thing') }\nf()", language="js")
    assert ex.error.name == "TypeError"
    assert ex.error.value == "bad thing"
    assert "at f" in ex.error.traceback
    ex = sbx.run_code("notDefined + 1", language="js")
    assert ex.error.name == "ReferenceError"
    assert sbx.run_code("x", language="js").text == "1", "an error keeps the state"


def test_typescript_runs_in_the_default_javascript_context(sbx):
    assert sbx.run_code("const t: string = 'typed'; t", language="ts").text == "typed"
    assert sbx.run_code("t", language="js").text == "typed"


def test_typescript_context():
    # A sandbox of its own: each Deno kernel holds ~175 MB, and the default 512 MiB fits
    # Python's kernel and one Deno kernel, not two.
    from e2b_code_interpreter import Sandbox

    s = Sandbox.create(timeout=60)
    try:
        ctx = s.create_code_context(language="ts", cwd="/tmp")
        assert ctx.language == "typescript"
        ex = s.run_code("interface P { n: number }\nconst p: P = { n: 20 };\np.n * 2 + 2", context=ctx)
        assert ex.error is None, ex.error
        assert ex.text == "42"
        assert s.run_code("Deno.cwd()", context=ctx).text == "/tmp"
        assert s.run_code("typeof p", context=ctx).text == "object"
        s.restart_code_context(ctx)
        assert s.run_code("typeof p", context=ctx).text == "undefined"
        s.remove_code_context(ctx)
    finally:
        s.kill()


def test_javascript_env_vars_apply_to_one_execution(sbx):
    ex = sbx.run_code("process.env.JS_ONLY_NOW", language="js", envs={"JS_ONLY_NOW": "it's \"here\""})
    assert ex.text == "it's \"here\"", ex.text  # Deno quotes it with backticks, stripped
    assert sbx.run_code("Deno.env.get('JS_ONLY_NOW') ?? 'unset'", language="js").text == "unset"


def test_javascript_timeout_gives_a_working_context_back(sbx):
    try:
        sbx.run_code("while (true) {}", language="js", timeout=2)
        raise AssertionError("no timeout")
    except Exception as e:
        assert "timeout" in type(e).__name__.lower() or "timed out" in str(e).lower(), e
    # Deno's kernel ends on an interrupt: the context goes on in a fresh kernel.
    assert sbx.run_code("1 + 1", language="js").text == "2"
