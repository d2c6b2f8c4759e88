"""The MLflow pyfunc that answers prompts with a saved optimix model (MLflow's "models from code").

This file is copied into every logged model and loaded by MLflow, not imported by optimix: it
needs only torch, transformers and mlflow, so ``mlflow models serve`` and
``mlflow.pyfunc.load_model`` work without optimix installed.

Input: a table with columns ``task`` (a task of the search) and ``prompt``; output: one answer
per row, greedy. How a prompt is written depends on the task (``optimix.json`` in the model,
written by ``optimix.serving.describe``, says for each task, with an example):

- ``tokens`` (copy, reverse, sort, facts, arithmetic): the input's tokens separated by spaces,
  as the search's vocabulary names them (``s3 s1 s4``); the answer is its fixed number of tokens.
- ``chars`` (dataset tasks): the prompt's text; the answer is text, up to the end token.
- ``text`` (text tasks): the start of a line; the answer continues it up to the line's budget.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import mlflow
from mlflow.pyfunc import PythonModel

PAD, SEP, EOS = 0, 1, 2

# The signature is the model's (optimix.serving), so MLflow's call for type hints on predict is noise.
warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method", category=UserWarning)


class Generator(PythonModel):
    def load_context(self, context) -> None:
        import torch
        from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

        path = Path(context.artifacts["hf"])
        self.model = AutoModelForCausalLM.from_pretrained(path).eval()
        self.tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
        self.tasks = json.loads((path / "optimix.json").read_text())["tasks"]
        self.torch = torch

    def predict(self, context, model_input, params=None):
        rows = model_input.to_dict("records") if hasattr(model_input, "to_dict") else list(model_input)
        return [self.answer(str(row["task"]), str(row["prompt"])) for row in rows]

    def answer(self, task: str, prompt: str) -> str:
        if task not in self.tasks:
            raise ValueError(f"task {task!r} is not one of this model's tasks: {', '.join(self.tasks)}")
        spec = self.tasks[task]
        ids = [self._id(f"<t:{task}>")]
        if spec["input"] == "tokens":
            ids += [self._id(token) for token in prompt.split()] + [SEP]
        elif spec["input"] == "chars":
            ids += [self._id(f"<c:{ord(c):x}>") for c in prompt] + [SEP]
        else:
            ids += self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        out = self._greedy(ids, max(0, spec["width"] - len(ids)) if spec["input"] == "text"
                           else spec["answer_tokens"], stop_at_eos=spec["input"] != "tokens")
        if spec["input"] == "tokens":
            return " ".join(self.tokenizer.convert_ids_to_tokens(out))
        if spec["input"] == "chars":
            return "".join(chr(int(t[3:-1], 16)) for t in self.tokenizer.convert_ids_to_tokens(out))
        return self.tokenizer.decode(out)

    def _id(self, token: str) -> int:
        i = self.tokenizer.convert_tokens_to_ids(token)
        if i is None or (i == PAD and token != "<pad>"):
            raise ValueError(f"{token!r} is not in this model's vocabulary")
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
