"""A streamed answer folded back into one OpenAI `chat.completion`, chunk by chunk.

The gateway relays each chunk as it comes and feeds it here, so the span of a streamed call
carries the same output, finish reasons and usage as a non-streaming one. Each chunk costs a few
dict look-ups (a bare text, one); content parts are kept as lists and joined once, when the trace
is encoded.
"""

from __future__ import annotations

from typing import Any

__all__ = ["StreamFold"]


class StreamFold:
    __slots__ = ("_choices", "chunks", "id", "model", "usage")

    def __init__(self) -> None:
        self.chunks = 0
        self.id: str | None = None
        self.model: str | None = None
        self.usage: dict[str, Any] | None = None
        self._choices: dict[int, dict[str, Any]] = {}

    def add(self, chunk: dict[str, Any] | str) -> None:
        """Fold one chunk: a `chat.completion.chunk`, or the bare text of choice 0."""
        self.chunks += 1
        if isinstance(chunk, str):
            (self._choices.get(0) or self._choice(0))["content"].append(chunk)
            return
        if self.id is None:
            self.id = chunk.get("id")
            self.model = chunk.get("model")
        usage = chunk.get("usage")
        if usage:
            self.usage = usage
        for choice in chunk.get("choices") or ():
            index = choice.get("index", 0)
            state = self._choices.get(index) or self._choice(index)
            delta = choice.get("delta") or {}
            if delta.get("role"):
                state["role"] = delta["role"]
            content = delta.get("content")
            if content:
                state["content"].append(content)
            for call in delta.get("tool_calls") or ():
                tool = state["tools"].setdefault(call.get("index", 0), {"id": None, "name": None, "args": []})
                if call.get("id"):
                    tool["id"] = call["id"]
                function = call.get("function") or {}
                if function.get("name"):
                    tool["name"] = function["name"]
                if function.get("arguments"):
                    tool["args"].append(function["arguments"])
            if choice.get("finish_reason"):
                state["finish"] = choice["finish_reason"]

    def add_all(self, chunks: list[dict[str, Any] | str]) -> None:
        """`add` each chunk. The most of a stream's chunks, text for the one choice already begun
        (`{"choices": [{"index": 0, "delta": {"content": "..."}, ...}], ...}`, no usage, no finish
        reason), are folded here with a third fewer bytecodes than through `add`: looked up by
        subscript in a `try`, which costs nothing unless a chunk of another shape raises (once or
        twice a stream: the finish chunk's empty delta, the usage chunk's empty choices)."""
        state_of = self._choices.get
        for chunk in chunks:
            if type(chunk) is dict and self.id is not None:
                try:
                    (choice,) = chunk["choices"]
                    delta = choice["delta"]
                    content = delta["content"]
                except (KeyError, TypeError, ValueError):  # not one choice with a text delta
                    self.add(chunk)
                    continue
                if (
                    type(content) is str
                    and len(delta) == 1
                    and not choice.get("finish_reason")
                    and not chunk.get("usage")
                    and (state := state_of(choice.get("index", 0))) is not None
                ):
                    if content:
                        state["content"].append(content)
                    self.chunks += 1
                    continue
            self.add(chunk)

    def _choice(self, index: int) -> dict[str, Any]:
        state = self._choices[index] = {"role": None, "content": [], "tools": {}, "finish": None}
        return state

    def completion(self) -> dict[str, Any]:
        """The folded answer in `chat.completion` shape (usage only if the provider sent it)."""
        choices = []
        for index in sorted(self._choices):
            state = self._choices[index]
            message: dict[str, Any] = {
                "role": state["role"] or "assistant",
                "content": "".join(state["content"]) if state["content"] else None,
            }
            if state["tools"]:
                message["tool_calls"] = [
                    {
                        "id": t["id"],
                        "type": "function",
                        "function": {"name": t["name"], "arguments": "".join(t["args"])},
                    }
                    for _, t in sorted(state["tools"].items())
                ]
            choices.append({"index": index, "message": message, "finish_reason": state["finish"]})
        out: dict[str, Any] = {"id": self.id, "object": "chat.completion", "model": self.model}
        out["choices"] = choices
        if self.usage is not None:
            out["usage"] = self.usage
        return out
