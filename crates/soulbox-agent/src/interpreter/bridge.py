# SoulBox kernel bridge: runs inside the sandbox, one per code context. It starts a real Jupyter
# kernel (argv: language, kernelspec name, cwd) with jupyter_client (ZeroMQ messaging protocol)
# and speaks JSON lines with the agent:
# requests on stdin ({"op": "execute" | "interrupt" | "restart" | "shutdown"}), and on stdout
# the lines of E2B's /execute format ({"type": "stdout" | "stderr" | "result" | "error" |
# "number_of_executions" | "end_of_execution"}), plus {"type": "ready"} after (re)starts.
import datetime
import json
import os
import queue
import shlex
import sys
import tempfile
import threading

from jupyter_client import KernelManager

MIME = {
    "text/plain": "text", "text/html": "html", "text/markdown": "markdown",
    "image/svg+xml": "svg", "image/png": "png", "image/jpeg": "jpeg",
    "application/pdf": "pdf", "text/latex": "latex", "application/json": "json",
    "application/javascript": "javascript", "e2b/data": "data", "e2b/chart": "chart",
}
# Kernels that speak ZeroMQ over TCP only (Deno's rejects an IPC connection file).
TCP_ONLY = {"deno"}
# Kernels that may publish a cell's result after its idle status (Deno's, on a busy CPU): their
# stragglers are collected once the execute_reply is in.
LATE_OUTPUT = {"deno"}
JS = {"javascript", "typescript", "deno"}

_out = threading.Lock()


def emit(obj):
    with _out:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def result(data, main):
    r = {"type": "result", "is_main_result": main}
    extra = {}
    for mime, value in data.items():
        key = MIME.get(mime)
        if key:
            r[key] = value
        else:
            extra[mime] = value
    text = r.get("text")
    if isinstance(text, str) and len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"`":
        r["text"] = text[1:-1]
    if extra:
        r["extra"] = extra
    return r


def set_env(language, env):
    """Code that sets env vars in the kernel and remembers the values it replaces."""
    if language == "bash":
        return "\n".join(f"_e2b_saved_{k}=${{{k}-__e2b_unset__}}; export {k}={shlex.quote(v)}"
                         for k, v in env.items() if k.isidentifier())
    if language in JS:
        return ("globalThis._e2b_saved = Object.fromEntries(%s.map((k) => [k, Deno.env.get(k) ?? null]));\n"
                "for (const [k, v] of Object.entries(%s)) Deno.env.set(k, v);"
                % (json.dumps(list(env)), json.dumps(env)))
    return ("import os as _e2b_os\n_e2b_saved = {k: _e2b_os.environ.get(k) for k in %r}\n"
            "_e2b_os.environ.update(%r)" % (list(env), env))


def restore_env(language, env):
    if language == "bash":
        return "\n".join(f'if [ "$_e2b_saved_{k}" = __e2b_unset__ ]; then unset {k}; '
                         f'else export {k}="$_e2b_saved_{k}"; fi; unset _e2b_saved_{k}'
                         for k in env if k.isidentifier())
    if language in JS:
        return ("for (const [k, v] of Object.entries(globalThis._e2b_saved)) "
                "v === null ? Deno.env.delete(k) : Deno.env.set(k, v);\ndelete globalThis._e2b_saved;")
    return ("[_e2b_os.environ.pop(k, None) if v is None else _e2b_os.environ.__setitem__(k, v)"
            " for k, v in _e2b_saved.items()]")


class Kernel:
    def __init__(self, language, kernel_name, cwd):
        self.language = language
        self.late_output = kernel_name in LATE_OUTPUT
        if kernel_name in TCP_ONLY:
            # Loopback only; every message is signed with the connection file's key (0600).
            self.km = KernelManager(kernel_name=kernel_name, transport="tcp", ip="127.0.0.1")
        else:
            # IPC (unix sockets in a private directory) rather than TCP on loopback: faster, and
            # other users in the sandbox cannot connect to the kernel's channels.
            self.km = KernelManager(kernel_name=kernel_name, transport="ipc",
                                    ip=os.path.join(tempfile.mkdtemp(prefix="soulbox-kernel-"), "k"))
        self.cwd = cwd
        self.interrupted = False
        # Sandbox env vars set after the kernel started, applied again after a restart.
        self.global_env = {}
        self.start()

    def start(self):
        self.km.start_kernel(cwd=self.cwd)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def restart(self):
        self.kc.stop_channels()
        self.km.restart_kernel(now=True)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        if self.global_env:
            self.run(set_env(self.language, self.global_env), silent=True)

    def run(self, code, silent=False):
        """Runs code, forwarding its output unless silent; returns when the kernel is idle."""
        msg_id = self.kc.execute(code, silent=silent, store_history=not silent)
        idle = False
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=0.05 if idle else 1)
            except queue.Empty:
                if idle:
                    return
                if not self.km.is_alive():
                    if not silent:
                        emit({"type": "error", "name": "UnexpectedEndOfExecution",
                              "value": "the kernel died during the execution", "traceback": ""})
                    return
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, c = msg["msg_type"], msg["content"]
            if kind == "status" and c.get("execution_state") == "idle":
                self.drain_shell(msg_id)
                if not self.late_output:
                    return
                idle = True
                continue
            if silent:
                continue
            if kind == "stream":
                emit({"type": "stdout" if c["name"] == "stdout" else "stderr", "text": c["text"], "timestamp": now()})
            elif kind in ("execute_result", "display_data"):
                emit(result(c.get("data", {}), kind == "execute_result"))
            elif kind == "error":
                emit({"type": "error", "name": c.get("ename", ""), "value": c.get("evalue", ""),
                      "traceback": "\n".join(c.get("traceback", []))})
            elif kind == "execute_input":
                emit({"type": "number_of_executions", "execution_count": c.get("execution_count", 0)})

    def drain_shell(self, msg_id):
        """Consumes the execute_reply, which follows the idle status, so replies do not pile up."""
        try:
            while self.kc.get_shell_msg(timeout=0.2)["parent_header"].get("msg_id") != msg_id:
                pass
        except queue.Empty:
            pass

    def interrupt(self):
        self.interrupted = True
        self.km.interrupt_kernel()

    def execute(self, code, env, global_env):
        if self.interrupted and not self.km.is_alive():
            # The interrupt ended the kernel (Deno's exits on SIGINT): carry on in a fresh one.
            self.restart()
            global_env = {**self.global_env, **global_env}
        self.interrupted = False
        self.global_env.update(global_env)
        if global_env:  # the sandbox's env vars changed (POST /init) since the kernel started
            self.run(set_env(self.language, global_env), silent=True)
        if env:
            self.run(set_env(self.language, env), silent=True)
        try:
            self.run(code)
        finally:
            if env and self.km.is_alive():
                self.run(restore_env(self.language, env), silent=True)
            emit({"type": "end_of_execution"})


def main():
    language, kernel_name, cwd = sys.argv[1:4]
    try:
        kernel = Kernel(language, kernel_name, cwd)
    except Exception as e:  # no such kernel, or it failed to start
        emit({"type": "failed", "message": f"{type(e).__name__}: {e}"})
        return
    emit({"type": "ready"})
    work = queue.Queue()

    def read_requests():
        for line in sys.stdin:
            req = json.loads(line)
            if req.get("op") == "interrupt":
                kernel.interrupt()
            else:
                work.put(req)
        work.put({"op": "shutdown"})

    threading.Thread(target=read_requests, daemon=True).start()
    while True:
        req = work.get()
        op = req.get("op")
        if op == "execute":
            kernel.execute(req.get("code", ""), req.get("env_vars") or {}, req.get("global_env") or {})
        elif op == "restart":
            kernel.restart()
            emit({"type": "ready"})
        elif op == "shutdown":
            kernel.kc.stop_channels()
            kernel.km.shutdown_kernel(now=True)
            return


main()
