"""Frontier models as MLflow models: registered by ``optimix frontier --register`` and served by
``mlflow models serve`` on loopback, answering prompts as the model does in-process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from optimix.core.metrics import parse_objectives_tag
from optimix.core.space import build_space
from optimix.search import SearchOptions, run_search

from cluster_fixtures import base_env, free_port, kill_sessions
from conftest import tiny_space

MLFLOW = str(Path(sys.executable).with_name("mlflow"))
OPTIMIX = str(Path(sys.executable).with_name("optimix"))
PATH = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # its uvicorn, as activated


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A real search that keeps its frontier's models: (tracking URI, storage path, parent run)."""
    root = tmp_path_factory.mktemp("serving")
    points = [{"mixture.rare_freq": 0.3, "model.d_model": 32},
              {"mixture.rare_freq": 0.02, "model.d_model": 16},
              {"mixture.rare_freq": 0.1, "model.d_model": 16}]
    tree = tiny_space(train={"tokens": 60_000},
                      search={"trials": 3, "sampler": "random", "max_concurrent": 1, "points_to_evaluate": points,
                              "save_models": "frontier"})
    uri, storage = f"sqlite:///{root}/mlflow.db", str(root / "runs")
    summary = run_search(build_space(tree), SearchOptions(tracking_uri=uri, storage_path=storage))
    return uri, storage, summary.parent_run_id


def optimix(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([OPTIMIX, *args], cwd=cwd, env=base_env(), capture_output=True, text=True,
                          timeout=120, check=False)


@contextlib.contextmanager
def model_server(model_uri: str, tracking_uri: str, timeout: float = 120):
    """``mlflow models serve`` on 127.0.0.1 in the test's own environment; yields its URL."""
    port = free_port()
    log_path = Path(tracking_uri.removeprefix("sqlite:///")).with_name(f"serve-{port}.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([MLFLOW, "models", "serve", "-m", model_uri, "--env-manager", "local",
                                 "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                env=base_env(MLFLOW_TRACKING_URI=tracking_uri, PATH=PATH), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:  # up when /ping answers
            assert proc.poll() is None, f"mlflow models serve exited {proc.returncode}:\n{log_path.read_text()[-4000:]}"
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/ping", timeout=2) as reply:
                if reply.status == 200:
                    break
            assert time.monotonic() < deadline, f"not serving in {timeout} s:\n{log_path.read_text()[-4000:]}"
            time.sleep(0.3)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        assert not kill_sessions([proc.pid], grace_s=5.0), "mlflow models serve outlived the test"
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def invoke(url: str, rows: list[dict]) -> tuple[int, dict]:
    body = json.dumps({"dataframe_records": rows}).encode()
    request = urllib.request.Request(f"{url}/invocations", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@pytest.mark.slow
def test_a_registered_frontier_model_is_served_and_answers_as_it_does_in_process(searched, tmp_path):
    import mlflow.pyfunc

    uri, storage, parent = searched
    client = MlflowClient(uri)
    done = optimix("frontier", "--tracking-uri", uri, "--storage-path", storage, "--register", "tiny-best",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "registered 'tiny-best' version 1: run " in done.stdout
    run_id = done.stdout.split("run ", 1)[1].split()[0]
    trial = client.get_run(run_id)
    assert trial.data.tags["mlflow.parentRunId"] == parent and trial.data.tags["optimix.pareto"] == "true"
    best = max(r.data.metrics["acc/facts"] for r in client.search_runs(
        [trial.info.experiment_id], "tags.`optimix.pareto` = 'true'"))
    assert trial.data.metrics["acc/facts"] == best  # the frontier's best in the first objective
    [version] = client.search_model_versions("name = 'tiny-best'")
    assert version.run_id == run_id

    folder = next(Path(client.download_artifacts(run_id, "model/artifacts", str(tmp_path))).iterdir())
    card = json.loads((folder / "optimix.json").read_text())["tasks"]
    rows = [{"task": name, "prompt": spec["example"]["prompt"]} for name, spec in card.items()]
    mlflow.set_tracking_uri(uri)
    local = mlflow.pyfunc.load_model("models:/tiny-best/1").predict(rows)
    with model_server("models:/tiny-best/1", uri) as url:
        status, served = invoke(url, rows)
        assert status == 200, served
        bad_status, bad = invoke(url, [{"task": "nope", "prompt": "s1"}])
    assert served["predictions"] == local
    right = teacher_forced_right(folder, card)
    assert any(right.values()) and not all(right.values()), right  # both ways, in this search
    for row, answer in zip(rows, served["predictions"], strict=True):
        spec = card[row["task"]]
        assert len(answer.split()) == spec["answer_tokens"]
        # Greedy decoding follows the true answer exactly as long as the model, shown the true
        # prefix, predicts each next token: the whole answer is right iff every one is.
        assert (answer == spec["example"]["answer"]) == right[row["task"]], (row, answer, spec)
    assert bad_status >= 400 and "'nope' is not one of this model's tasks" in json.dumps(bad)


@pytest.mark.slow
def test_register_names_a_trial_and_refuses_one_that_kept_no_model(searched, tmp_path):
    uri, storage, parent = searched
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_run(parent).info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    kept = [r for r in runs if r.data.tags["optimix.pareto"] == "true"]
    bare = [r for r in runs if r.data.tags["optimix.pareto"] != "true"]
    done = optimix("frontier", "--tracking-uri", uri, "--storage-path", storage, "--register", "pick",
                   "--run", kept[-1].data.tags["optimix.trial_id"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"run {kept[-1].info.run_id}" in done.stdout
    if bare:  # off the frontier: no model was kept
        refused = optimix("frontier", "--tracking-uri", uri, "--storage-path", storage, "--register", "pick",
                          "--run", bare[0].info.run_id, cwd=tmp_path)
        assert refused.returncode != 0 and "Traceback" not in refused.stderr
        assert refused.stderr.strip().splitlines()[-1].startswith(f"error: --run: run {bare[0].info.run_id} kept no")
    stray = optimix("frontier", "--tracking-uri", uri, "--storage-path", storage, "--run", "x", cwd=tmp_path)
    assert stray.returncode != 0 and "--register" in stray.stderr and "Traceback" not in stray.stderr


def teacher_forced_right(folder: Path, card: dict) -> dict[str, bool]:
    """Per task with an example: whether the model, shown the example's true answer so far,
    predicts each next answer token (and a dataset answer's end), with transformers directly."""
    import torch
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
    out = {}
    for name, spec in card.items():
        if "example" not in spec:
            continue
        prompt, answer = spec["example"]["prompt"], spec["example"]["answer"]
        if spec["input"] == "chars":
            prompt, answer = [f"<c:{ord(c):x}>" for c in prompt], [f"<c:{ord(c):x}>" for c in answer] + ["<eos>"]
        else:
            prompt, answer = prompt.split(), answer.split()
        ids = tokenizer.convert_tokens_to_ids([f"<t:{name}>", *prompt, "<sep>", *answer])
        with torch.no_grad():
            predicted = model(input_ids=torch.tensor([ids])).logits[0].argmax(-1).tolist()
        out[name] = predicted[len(ids) - len(answer) - 1: -1] == ids[len(ids) - len(answer):]
    return out


def test_a_saved_model_answers_every_kind_of_task_in_process(tmp_path):
    """Without a server: the pyfunc that a run's ``model`` holds, loaded by MLflow, on a
    synthetic, a dataset and a text task."""
    import mlflow.pyfunc

    from optimix.records import serving
    from optimix.trial.train import run_trial

    (tmp_path / "qa.jsonl").write_text("".join(json.dumps({"prompt": f"{a}+{b}", "answer": str(a + b)}) + "\n"
                                               for a in range(12) for b in range(12)))
    (tmp_path / "prose.txt").write_text("".join(f"the {w} sees the {v} at dawn.\n"
                                                for w in ("cat", "dog", "owl", "fox") for v in ("emu", "yak", "elk")) * 20)
    tree = tiny_space("serve",
                      tasks={"copy": {}, "qa": {"kind": "dataset", "path": str(tmp_path / "qa.jsonl")},
                             "prose": {"kind": "text", "path": str(tmp_path / "prose.txt"), "vocab_size": 300,
                                       "max_tokens": 12}},
                      mixture={"rare_task": "qa", "rare_freq": 0.3}, model={"d_model": 32, "n_layer": 2},
                      train={"tokens": 40_000, "lr": 0.01, "device": "cpu"}, eval={"points": 1, "size": 32},
                      search=None)
    result = run_trial(build_space(tree).base, save_dir=tmp_path / "hf")
    assert result.status == "ok", result.error
    model = mlflow.pyfunc.load_model(str(serving.pyfunc_model(tmp_path / "hf", tmp_path / "pyfunc")))
    card = json.loads((tmp_path / "hf" / "optimix.json").read_text())["tasks"]
    assert card["qa"]["input"] == "chars" and card["prose"]["input"] == "text" and "example" not in card["prose"]
    rows = [{"task": n, "prompt": spec["example"]["prompt"]} for n, spec in card.items() if "example" in spec]
    answers = model.predict(rows)
    right = teacher_forced_right(tmp_path / "hf", card)
    for row, answer in zip(rows, answers, strict=True):
        assert (answer == card[row["task"]]["example"]["answer"]) == right[row["task"]], (row, answer)
    assert card["qa"]["example"]["answer"].isdigit()
    [more] = model.predict([{"task": "prose", "prompt": "the cat sees"}])
    assert isinstance(more, str) and more.strip()  # a continuation, within the line's budget
    with pytest.raises(Exception, match="not in this model's vocabulary"):
        model.predict([{"task": "copy", "prompt": "s1 zz"}])

    # What `mlflow models serve` answers a bad request (its own code from request to reply):
    # a 400 with one line saying what is wrong, no stack trace, no server path, no echo.
    copy_prompt = card["copy"]["example"]["prompt"]
    positions = max(spec["width"] for spec in card.values())  # the sequence length it trained on
    room = positions - 2 - card["copy"]["answer_tokens"]  # less the task's token and the separator
    token = copy_prompt.split()[0]
    for rows, says in [
        ([{"task": "copy", "prompt": " ".join([token] * 30_000)}],
         f"row 0: the prompt is 30000 tokens; task 'copy' takes at most {room} (this model has {positions} positions)"),
        ([{"task": "copy", "prompt": " ".join([token] * (room + 1))}], f"row 0: the prompt is {room + 1} tokens"),
        ([{"task": "copy", "prompt": copy_prompt}, {"task": "nope", "prompt": "s1"}],
         "row 1: task 'nope' is not one of this model's tasks: copy, qa, prose"),
        ([{"task": "qa", "prompt": "1+" * 100}], "row 0: the prompt is 200 tokens; task 'qa' takes at most"),
    ]:
        status, body = _served(model, rows)
        assert status == 400 and body["message"].startswith(says), body
        assert "\n" not in body["message"] and "stack_trace" not in body, body
        assert str(tmp_path) not in json.dumps(body) and "site-packages" not in json.dumps(body), body
    assert _served(model, [{"task": "copy", "prompt": " ".join([token] * room)}])[0] == 200  # the longest


def _served(model, rows: list[dict]) -> tuple[int, dict]:
    """The status and JSON body MLflow's scoring server (``mlflow models serve``) replies."""
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server

    try:
        reply = scoring_server.invocations(json.dumps({"dataframe_records": rows}), "application/json",
                                           model, model.metadata.get_input_schema())
        return reply.status, json.loads(reply.response)
    except MlflowException as err:
        return err.get_http_status_code(), json.loads(err.serialize_as_json())


def test_register_on_a_frontier_of_curve_points_only_says_why_and_how(tmp_path):
    """A frontier made of learning-curve points only has no model to register: not for want
    of ``save_models: frontier`` (a curve point is a trial mid-way, whose weights are not kept)."""
    from optimix.records import serving
    from optimix.records.records import SearchRecord, TrialRecord

    trials = [TrialRecord(f"run-{i}", str(i), "ok", False, {}, {"acc/facts": 0.5, "train_flops": 1e9},
                          pareto_steps=[1] if i == 0 else []) for i in range(2)]
    record = SearchRecord("parent", "tiny", parse_objectives_tag("acc/facts:max,train_flops:min"), trials)
    with pytest.raises(ValueError) as err:
        serving.pick_trial(MlflowClient(f"sqlite:///{tmp_path}/mlflow.db"), record, None)
    said = str(err.value)
    assert "learning-curve points only (0 at step 1)" in said and "--run ID" in said, said
    assert "set search.save_models" not in said and "\n" not in said
