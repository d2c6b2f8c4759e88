"""The MLflow pyfunc that answers prompts with a saved optimix model (MLflow's "models from code").

This file is copied into every logged model and loaded by MLflow, not imported by optimix: it
needs only torch, transformers and mlflow, so ``mlflow models serve`` and
``mlflow.pyfunc.load_model`` work without optimix installed.

Input: a table with columns ``task`` (a task of the search) and ``prompt``; output: one answer
per row, greedy. How a prompt is written depends on the task (``optimix.json`` in the model,
written by ``optimix.trial.card.describe``, says for each task, with an example):

- ``tokens`` (copy, reverse, sort, facts, arithmetic): the input's tokens separated by spaces,
  as the search's vocabulary names them (``s3 s1 s4``); the answer is its fixed number of tokens.
- ``chars`` (dataset tasks): the prompt's text; the answer is text, up to the end token.
- ``text`` (text tasks): the start of a line; the answer continues it up to the line's budget.

A bad request (an unknown task, a token not in the vocabulary, a prompt longer than the
positions the model was trained on) is refused with one line (HTTP 400 from the scoring
server), never a stack trace; any other failure likewise says only which row failed.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

PAD, SEP, EOS = 0, 1, 2

# The signature is the model's (optimix.records.serving), so MLflow's call for type hints on predict is noise.
warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method", category=UserWarning)


class Refusal(MlflowException):
    """An error the scoring server returns as this one line (400 for a bad request). MLflow's
    server rewrites a model's message to start with the request's whole data; the message here
    keeps its own words. (Any other exception it returns with a stack trace.)"""

    def __init__(self, line: str, error_code: int = INVALID_PARAMETER_VALUE):
        self._line = line
        super().__init__(line, error_code=error_code)

    @property
    def message(self) -> str:
        return self._line

    @message.setter
    def message(self, value: str) -> None:
        pass  # (MlflowException.__init__ sets it; the scoring server prefixes the data)


class Generator(PythonModel):
    def load_context(self, context) -> None:
        import torch
        from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

        path = Path(context.artifacts["hf"])
        self.model = AutoModelForCausalLM.from_pretrained(path).eval()
        self.tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
        self.tasks = json.loads((path / "optimix.json").read_text())["tasks"]
        # The sequence length it was trained on (its widest task; optimix.trial.model.shape_for):
        # RoPE would answer a longer prompt anyway, with positions it never saw.
        self.positions = max(spec["width"] for spec in self.tasks.values())
        self.torch = torch

    def predict(self, context, model_input, params=None):
        rows = model_input.to_dict("records") if hasattr(model_input, "to_dict") else list(model_input)
        out = []
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or not {"task", "prompt"} <= set(row):
                raise Refusal(f"row {i}: give the columns task and prompt")
            try:
                out.append(self.answer(str(row["task"]), str(row["prompt"])))
            except Refusal as err:
                raise Refusal(f"row {i}: {err.message}") from None
            except Exception as err:  # the model's own failure: no trace (it names server paths)
                raise Refusal(f"row {i}: the model failed ({type(err).__name__})", INTERNAL_ERROR) from None
        return out

    def answer(self, task: str, prompt: str) -> str:
        if task not in self.tasks:
            raise Refusal(f"task {task!r} is not one of this model's tasks: {', '.join(self.tasks)}")
        spec = self.tasks[task]
        ids = [self._id(f"<t:{task}>")]
        if spec["input"] == "tokens":
            ids += [self._id(token) for token in prompt.split()] + [SEP]
        elif spec["input"] == "chars":
            ids += [self._id(f"<c:{ord(c):x}>") for c in prompt] + [SEP]
        else:
            ids += self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        n = max(0, spec["width"] - len(ids)) if spec["input"] == "text" else spec["answer_tokens"]
        if len(ids) + n > self.positions:
            markers = 1 if spec["input"] == "text" else 2  # the task's token, the separator
            room = self.positions - markers - (0 if spec["input"] == "text" else n)
            raise Refusal(f"the prompt is {len(ids) - markers} tokens; task {task!r} takes at most "
                          f"{room} (this model has {self.positions} positions)")
        out = self._greedy(ids, n, stop_at_eos=spec["input"] != "tokens")
        if spec["input"] == "tokens":
            return " ".join(self.tokenizer.convert_ids_to_tokens(out))
        if spec["input"] == "chars":
            return "".join(chr(int(t[3:-1], 16)) for t in self.tokenizer.convert_ids_to_tokens(out))
        return self.tokenizer.decode(out)

    def _id(self, token: str) -> int:
        i = self.tokenizer.convert_tokens_to_ids(token)
        if i is None or (i == PAD and token != "<pad>"):
            raise Refusal(f"{token[:40]!r} is not in this model's vocabulary")
        return int(i)

    def _greedy(self, ids: list[int], n: int, stop_at_eos: bool) -> list[int]:
        """``n`` tokens, each the most likely after what came before (fewer at the end token)."""
        out: list[int] = []
        x = self.torch.tensor([ids])
        with self.torch.no_grad():
            for _ in range(n):
                token = int(self.model(input_ids=x).logits[0, -1].argmax())
                if stop_at_eos and token == EOS:
                    break
                out.append(token)
                x = self.torch.cat([x, self.torch.tensor([[token]])], dim=1)
        return out


mlflow.models.set_model(Generator())
