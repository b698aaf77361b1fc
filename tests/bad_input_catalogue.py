"""Bad-input catalogue (issue 13): run train.py / decode.py as a new user would, with wrong input, and tabulate.

Not a pytest module (no test functions): a script. Each case is one CLI invocation with a timeout; the table
gives the command, the exit code, the last line printed and a verdict:
    OK          exit != 0, no traceback, exactly one message line on stderr (log-framework noise ignored)
    TRACEBACK   a Python traceback was printed
    SILENT      exit 0 on nonsense (or a setting silently ignored), or still running at the timeout
    MULTILINE   exit != 0 without a traceback, but the message spans several lines (or no line at all)
Control cases (valid input) get RAN (exit 0) or BROKEN. Uses the tiny pocket world (pocket=tiny, built on
first use under .cache/pocket/tiny); runs are kept short (trainer.max_steps=2, max_new_tokens=4, one prompt).

    .venv/bin/python tests/bad_input_catalogue.py [--out table.md] [--jobs 2] [--only SUBSTRING] [--timeout 300]
                                                  [--world fast]

--world fast runs every case on a pocket world of the tiny shape trained for a few dozen steps only
(pocket.name=catalogue, built on first use in a minute or two): the verdicts are about input handling, not model
quality, and the full tiny world takes 30+ minutes to build on a loaded 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POCKET = ROOT / ".cache" / "pocket" / "tiny"
WORLDS = {"tiny": [], "fast": ["pocket.name=catalogue", "pocket.verifier.steps=40", "pocket.ar_drafter.steps=30",
                               "pocket.drafter.steps=30", "pocket.val_every=20"]}
WORLD: list[str] = []  # overrides of the chosen world, put before each case's own arguments
DECODE = ["max_new_tokens=4", "data.prompts.limit=1", "warmup=false"]
TRAIN = ["trainer=tiny", "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
         "logger=csv"]
# Lines that logging frameworks print on their own (item 13 of the issue); not counted as the error message.
NOISE = re.compile(r"^(\[\d{4}-\d\d-\d\d [^]]*\]\[[^]]*\]\[(INFO|WARNING|DEBUG)\]|(INFO|WARNING|DEBUG):|"
                   r"\S+\.py:\d+: |\s+warnings\.warn|wandb: )")
# Lines that say nothing about the outcome: Hydra's pointer to its full trace, table borders.
UNINFORMATIVE = re.compile(r"^(Set the environment variable HYDRA_FULL_ERROR|full_key: |object_type=|"
                           r"[\s│┃|─━┌┐└┘├┤┬┴┼╭╮╰╯═]*$)")


@dataclass
class Case:
    script: str  # train.py | decode.py
    args: list[str]
    base: bool = True  # prepend the short-run arguments (DECODE / TRAIN)
    control: bool = False  # valid input: must run (exit 0)
    timeout: int | None = None
    check: str | None = None  # exit 0 is fine when: "no_bar" no progress bar, "skip" skip reported, "note" a note
    setup: list[str] = field(default_factory=list)  # fixtures this case needs (for --only runs)


def fixtures(tmp: Path) -> dict[str, str]:
    """Bad files and directories the cases point at; {name: path}."""
    f: dict[str, str] = {}

    def model_copy(name: str, src: Path, weights: bytes | None = None, drop: tuple[str, ...] = (),
                   config: str | None = None) -> None:
        out = tmp / name
        shutil.copytree(src, out)
        for d in drop:
            for p in out.glob(d):
                p.unlink()
        if weights is not None:
            (out / "model.safetensors").write_bytes(weights)
        if config is not None:
            (out / "config.json").write_text(config)
        f[name] = str(out)

    for role in ("verifier", "drafter"):
        src = POCKET / role
        raw = (src / "model.safetensors").read_bytes()
        model_copy(f"{role}_truncated", src, raw[: len(raw) // 2])
        model_copy(f"{role}_empty", src, b"")
        model_copy(f"{role}_garbage", src, os.urandom(4096))
        model_copy(f"{role}_noweights", src, drop=("*.safetensors",))
        model_copy(f"{role}_notokenizer", src, drop=("tokenizer*",))
        model_copy(f"{role}_badconfig", src, config="{not json")
    swapped = tmp / "drafter_swapped"  # two tokens trade ids: trains silently without a vocabulary check
    shutil.copytree(POCKET / "drafter", swapped)
    tok = json.loads((swapped / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[300:302]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (swapped / "tokenizer.json").write_text(json.dumps(tok))
    f["drafter_swapped"] = str(swapped)
    other = tmp / "drafter_othertok"  # another tokenizer altogether (smaller vocabulary)
    shutil.copytree(POCKET / "drafter", other)
    sys.path.insert(0, str(ROOT))
    from specdiff2.pocket.tokenizer import train_tokenizer

    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (other / name).unlink(missing_ok=True)
    train_tokenizer(["zzz yyy xxx " * 50, "print('other corpus')\n" * 40], 300, other)
    f["drafter_othertok"] = str(other)
    (tmp / "noconfig").mkdir()
    f["noconfig"] = str(tmp / "noconfig")
    afile = tmp / "afile"
    afile.write_text("not a directory\n")
    f["afile"] = str(afile)
    jsonl = {
        "empty": "",
        "garbage": "this is not json\n",
        "wrongfields": '{"foo": 1}\n',
        "emptyprompt": '{"prompt": ""}\n',
        "longprompt": json.dumps({"id": "huge", "prompt": "def f(x):\n    return x\n" * 400}) + "\n",
        "longamong": '{"prompt": "def add(a, b):"}\n'
                     + json.dumps({"id": "huge", "prompt": "x = 1\n" * 1500}) + "\n"
                     + '{"prompt": "import os"}\n',
        "good": '{"prompt": "def add(a, b):"}\n{"prompt": "import os"}\n',
    }
    for name, text in jsonl.items():
        (tmp / f"{name}.jsonl").write_text(text)
        f[f"{name}.jsonl"] = str(tmp / f"{name}.jsonl")
    user = tmp / "userdir"
    (user / "results" / "run1").mkdir(parents=True)
    (user / "results" / "run1" / "weights.bin").write_bytes(b"precious")
    (user / "notes.txt").write_text("mine\n")
    f["userdir"] = str(user)
    (tmp / "ckpt_garbage.ckpt").write_bytes(os.urandom(1000))
    f["ckpt_garbage"] = str(tmp / "ckpt_garbage.ckpt")
    (tmp / "emptyrun").mkdir()
    f["emptyrun"] = str(tmp / "emptyrun")
    f["readonly"] = "/proc/specdiff2-catalogue"  # mkdir there fails even as root
    return f


def cases(f: dict[str, str]) -> list[Case]:
    D, T = "decode.py", "train.py"
    V, Dr = "verifier", "drafter"
    real = ["verifier.pocket=false", "drafter.pocket=false"]
    out = [
        # controls: the short runs themselves must work
        Case(D, [], control=True),
        Case(D, ["decode=ar"], control=True),
        Case(T, [], control=True),
        Case(T, ["export=last"], control=True),
        # unknown options and misspelt keys
        Case(D, ["drafter=nope"]), Case(D, ["decode=nope"]), Case(D, ["data=nope"]), Case(T, ["verifier=gpt5"]),
        Case(T, ["loss=nope"]), Case(D, ["-m", "decode=ar,nope"]), Case(D, ["pocket=nope"]),
        Case(D, ["experiment=nope"]), Case(T, ["trainer=nope"]), Case(T, ["logger=nope"]),
        Case(D, ["acceptance=nope"]),
        Case(D, ["max_new_token=4"]), Case(D, ["decode.strategy.gama=8"]), Case(D, ["temprature=0.5"]),
        Case(T, ["trainer.max_step=2"]), Case(T, ["optim.optimizer.learning_rate=1e-3"]), Case(T, ["lr=1e-3"]),
        Case(D, ["+foo=1"], check="note"),
        # decode.py values
        Case(D, ["max_new_tokens=abc"]), Case(D, ["max_new_tokens=0"]), Case(D, ["max_new_tokens=-3"]),
        Case(D, ["max_new_tokens=4.5"]), Case(D, ["temperature=abc"]), Case(D, ["temperature=-1"]),
        Case(D, ["top_p=0"]), Case(D, ["top_p=1.5"]), Case(D, ["top_k=-2"]), Case(D, ["top_k=abc"]),
        Case(D, ["max_seq_len=8"]), Case(D, ["max_seq_len=abc"]), Case(D, ["decode.strategy.gamma=0"]),
        Case(D, ["decode.strategy.gamma=-1"]), Case(D, ["decode.strategy.steps=0"]),
        Case(D, ["decode=self_select", "decode.strategy.k=0"]), Case(D, ["device=tpu"]),
        Case(D, ["device=cuda"]), Case(D, ["seed=abc"]), Case(D, ["warmup=maybe"]),
        Case(D, ["acceptance=greedy", "temperature=0.7"]), Case(D, ["decode.models.drafter.cache=bogus"]),
        # prompts
        Case(D, ["data.prompts.limit=0"]), Case(D, ["data.prompts.limit=-1"]),
        Case(D, ["data.prompts.offset=100000"]), Case(D, ["data=jsonl"]),
        Case(D, ["data=jsonl", "data.prompts.path=/nonexistent/prompts.jsonl"]),
        Case(D, ["data=jsonl", f"data.prompts.path={f['empty.jsonl']}"]),
        Case(D, ["data=jsonl", f"data.prompts.path={f['garbage.jsonl']}"]),
        Case(D, ["data=jsonl", f"data.prompts.path={f['wrongfields.jsonl']}"]),
        Case(D, ["data=jsonl", f"data.prompts.path={f['emptyprompt.jsonl']}"]),
        Case(D, ["data=jsonl", f"data.prompts.path={f['noconfig']}"]),
        Case(D, ["data=jsonl", f"data.prompts.path={f['longprompt.jsonl']}", "max_seq_len=256"]),
        Case(D, ["data=jsonl", f"data.prompts.path={f['longamong.jsonl']}", "data.prompts.limit=null",
                 "max_seq_len=256"], check="skip"),
        Case(D, ["data=gsm8k", "paths.data_dir=/nonexistent"]),
        # checkpoints
        Case(D, ["verifier.path=/nonexistent", "verifier.pocket=false"]),
        Case(D, ["verifier=qwen72b"]), Case(D, ["verifier=qwen7b", "drafter=dream"]),
        *[Case(D, [f"{role}.path={f[f'{role}_{bad}']}", *real])
          for role in (V, Dr) for bad in ("truncated", "empty", "garbage", "noweights", "notokenizer",
                                          "badconfig")],
        Case(D, [f"drafter.path={f['noconfig']}", *real]),
        Case(D, ["verifier.dtype=float8"]), Case(D, ["drafter.mask_token_id=99999"]),
        Case(D, ["drafter.logit_shift=maybe"]),
        Case(D, ["decode=sd_ar", "ar_drafter.path=/nonexistent", "ar_drafter.pocket=false"]),
        Case(D, ["pocket.vocab_size=abc"]),
        # output and cache directories
        Case(D, [f"hydra.run.dir={f['afile']}"]), Case(D, [f"hydra.run.dir={f['readonly']}/run"]),
        Case(D, [f"paths.cache_dir={f['afile']}"]), Case(D, [f"paths.cache_dir={f['readonly']}"]),
        Case(T, [f"hydra.run.dir={f['afile']}"]), Case(T, [f"hydra.run.dir={f['readonly']}/run"]),
        Case(T, [f"paths.cache_dir={f['afile']}"]),
        # train.py values
        Case(T, ["trainer.val_check_interval=0"]), Case(T, ["optim.optimizer.lr=-1"]),
        Case(T, ["optim.optimizer.lr=abc"]), Case(T, ["optim.optimizer.lr=1e30"]),
        Case(T, ["trainer.max_steps=-5"]), Case(T, ["trainer.max_steps=-1"], timeout=150),
        Case(T, ["trainer.max_steps=0"], check="note"), Case(T, ["trainer.max_steps=abc"]), Case(T, ["export=bogus"]),
        Case(T, ["trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
                 "logger=csv", "progress_bar=false"], base=False, check="no_bar"),
        Case(T, ["progress_bar=maybe"]), Case(T, ["resume=/nonexistent.ckpt"]),
        Case(T, [f"resume={f['ckpt_garbage']}"]), Case(T, [f"resume={f['emptyrun']}"]),
        Case(T, ["loss.weights.nope=1.0"]), Case(T, ["loss.weights.streak=-1"]), Case(T, ["loss.temperature=0"]),
        Case(T, ["loss.temperature=abc"]), Case(T, ["peft=lora", "peft.lora.r=0"]),
        Case(T, ["peft=lora", "peft.lora.target_modules=[nope]"]),
        Case(T, ["trainer.precision=bogus"]), Case(T, ["trainer.accelerator=gpu"]), Case(T, ["trainer.devices=0"]),
        Case(T, ["trainer.accumulate_grad_batches=0"]), Case(T, ["trainer.gradient_clip_val=abc"]),
        Case(T, ["optim.scheduler.num_warmup_steps=-1"]), Case(T, ["seed=abc"]),
        Case(T, ["module.online_topk=-1"]), Case(T, ["module.val_temperature=0"]),
        # trajectories and windows
        Case(T, ["data=jsonl"]), Case(T, ["data=jsonl", f"data.prompts.path={f['empty.jsonl']}"]),
        Case(T, [f"data.store_dir={f['userdir']}"]), Case(T, [f"data.store_dir={f['afile']}"]),
        Case(T, ["data.generation.num_prompts=0"]), Case(T, ["data.generation.num_prompts=100000"]),
        Case(T, ["data.generation.samples_per_prompt=0"]), Case(T, ["data.generation.backend=nope"]),
        Case(T, ["data.generation.source=nope"]), Case(T, ["data.windows.gamma=0"]),
        Case(T, ["data.windows.max_len=4"]), Case(T, ["data.windows.stride=0"]),
        *[Case(T, [f"{role}.path={f[f'{role}_{bad}']}", *real])
          for role in (V, Dr) for bad in ("truncated", "empty", "garbage", "notokenizer")],
        # added after the audit: training vocabulary (item 7), misspelt keys, type errors
        Case(T, [f"drafter.path={f['drafter_swapped']}", *real]),
        Case(T, [f"drafter.path={f['drafter_othertok']}", *real]),
        Case(T, ["optim.lr=1"]), Case(T, ["trainer.max_steps=2.5"]), Case(T, ["module.online_topk=abc"]),
        Case(D, ["top_p=abc"]), Case(D, ["decode.strategy.k=4"]),
        # added for issue 22: field types of strategies (also swept), a directory as the prompt file
        Case(D, ["decode.strategy.gamma=abc"]), Case(D, ["decode.strategy.steps=two"]),
        Case(D, ["hydra.mode=MULTIRUN", "decode.strategy.gamma=8,abc"]), Case(D, ["decode=self_select", "decode.strategy.k=many"]),
        Case(D, ["data=jsonl", f"data.prompts.path={f['userdir']}"]),
    ]
    return out


def has_traceback(text: str) -> bool:
    return "Traceback" in text or "Error executing job" in text


def verdict(case: Case, rc: int | None, stdout: str, stderr: str, traceback: bool) -> str:
    text = stdout + stderr
    if case.control:
        return "RAN" if rc == 0 else "BROKEN"
    if rc is None:
        return "SILENT"  # still running on nonsense at the timeout
    if traceback:
        return "TRACEBACK"
    if rc == 0:
        if case.check == "no_bar":
            return "OK" if not re.search(r"it/s|Epoch \d", text) else "SILENT"  # (━ also draws tables)
        if case.check == "skip":
            return "OK" if re.search(r"skip", text, re.IGNORECASE) else "SILENT"
        if case.check == "note":
            return "OK" if re.search(r"^note: ", stderr, re.MULTILINE) else "SILENT"
        return "SILENT"
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not NOISE.match(ln)]
    return "OK" if len(lines) == 1 else "MULTILINE"


def last_line(rc: int | None, stdout: str, stderr: str) -> str:
    notes = [ln.strip() for ln in stderr.splitlines() if ln.startswith("note: ")]
    if rc == 0 and notes:  # a run that says what it did with an odd value: that line, not the summary table
        return notes[-1]
    for text in ((stderr, stdout) if rc else (stdout, stderr)):
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not UNINFORMATIVE.match(ln.strip())]
        if lines:
            return lines[-1]
    return ""


def run_case(i: int, case: Case, tmp: Path, timeout: int) -> dict:
    args = WORLD + ([*(DECODE if case.script == "decode.py" else TRAIN)] if case.base else []) + case.args
    if not any(a.startswith("hydra.run.dir=") for a in args) and "-m" not in args:
        args.append(f"hydra.run.dir={tmp / 'runs' / str(i)}")
    if "-m" in args:
        args.append(f"hydra.sweep.dir={tmp / 'runs' / str(i)}")
    env = {**os.environ, "SPECDIFF2_ROOT": str(ROOT), "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, case.script, *args]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=case.timeout or timeout)
        rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as err:
        rc = None
        stdout = err.stdout.decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
        stderr = err.stderr.decode(errors="replace") if isinstance(err.stderr, bytes) else (err.stderr or "")
    traceback = has_traceback(stdout + stderr)
    return {"i": i, "command": shown_command(case, tmp), "rc": rc, "last": last_line(rc, stdout, stderr),
            "verdict": verdict(case, rc, stdout, stderr, traceback), "traceback": traceback,
            "wall_s": round(time.perf_counter() - t0, 1), "stdout_tail": stdout[-4000:], "stderr_tail": stderr[-4000:]}


def shown_command(case: Case, tmp: Path) -> str:
    return " ".join([case.script, *case.args]).replace(str(tmp), "$TMP")


def rescore(path: str, tmp: Path) -> list[dict]:
    """Verdicts and last lines again from a saved --json file (after a change to the rules, not the code)."""
    by_index = dict(enumerate(cases(fixtures(tmp)), 1))
    results = json.loads(Path(path).read_text())
    for r in results:
        case = by_index[r["i"]]
        assert shown_command(case, tmp) == r["command"], (r["i"], r["command"])
        traceback = r.get("traceback", r["verdict"] == "TRACEBACK")
        r.update(traceback=traceback, last=last_line(r["rc"], r["stdout_tail"], r["stderr_tail"]),
                 verdict=verdict(case, r["rc"], r["stdout_tail"], r["stderr_tail"], traceback))
    return results


def table(results: list[dict]) -> str:
    rows = ["| # | command | exit | last line printed | verdict |", "|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: r["i"]):
        last = r["last"].replace("|", "\\|")[:300]
        rc = "timeout" if r["rc"] is None else r["rc"]
        rows.append(f"| {r['i']} | `{r['command']}` | {rc} | {last} | {r['verdict']} |")
    counts: dict[str, int] = {}
    for r in results:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    bad = sum(1 for r in results if "RAN" != r["verdict"] != "BROKEN")
    return f"{len(results)} cases ({bad} bad input, {len(results) - bad} controls): {summary}\n\n" + "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="write the markdown table here too")
    ap.add_argument("--json", default=None, help="write every case's output tail here")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--timeout", type=int, default=300)
    ap.add_argument("--only", default=None, help="run only cases whose command contains this")
    ap.add_argument("--rescore", default=None, help="re-tabulate a saved --json file instead of running")
    ap.add_argument("--world", default="tiny", choices=sorted(WORLDS), help="pocket world the cases run on")
    opts = ap.parse_args()
    global POCKET
    WORLD[:] = WORLDS[opts.world]
    POCKET = ROOT / ".cache" / "pocket" / ("catalogue" if opts.world == "fast" else "tiny")
    if not (POCKET / "drafter.done").exists():
        sys.exit(f"build the pocket world first (python decode.py decode=ar max_new_tokens=4 data.prompts.limit=1 "
                 f"{' '.join(WORLD)}): {POCKET} is incomplete")
    with tempfile.TemporaryDirectory(prefix="catalogue-") as tmp_name:
        tmp = Path(tmp_name)
        if opts.rescore:
            results = rescore(opts.rescore, tmp)
            return finish(results, opts)
        all_cases = list(enumerate(cases(fixtures(tmp)), 1))
        if opts.only:
            all_cases = [(i, c) for i, c in all_cases if opts.only in " ".join([c.script, *c.args])]
        # Controls first and alone: the first train.py run samples the shared trajectory store.
        results = [run_case(i, c, tmp, opts.timeout) for i, c in all_cases if c.control]
        for r in results:
            print(f"[{r['i']}] {r['verdict']:9} {r['wall_s']:6}s {r['command']}", flush=True)
        with ThreadPoolExecutor(opts.jobs) as pool:
            futures = [pool.submit(run_case, i, c, tmp, opts.timeout) for i, c in all_cases if not c.control]
            for fut in futures:
                r = fut.result()
                results.append(r)
                print(f"[{r['i']}] {r['verdict']:9} {r['wall_s']:6}s {r['command']} -> {r['last'][:160]}",
                      flush=True)
    finish(results, opts)


def finish(results: list[dict], opts) -> None:
    md = table(results)
    print(md)
    if opts.out:
        Path(opts.out).write_text(md + "\n")
    if opts.json:
        Path(opts.json).write_text(json.dumps(sorted(results, key=lambda r: r["i"]), indent=1))


if __name__ == "__main__":
    main()
