"""Text towers driven from token embeddings, for prompt learning (CoOp).

A `PromptTower` tokenises prompts, returns their token embeddings (T, L, D), and encodes prompts
from (edited) token embeddings into text features (T, E), with gradients. The backends here run
the library's own text forward on the token ids while a forward hook on the token-embedding layer
swaps that layer's output for the given embeddings; positions, masks, the causal mask, EOT/CLS
pooling and the projection are then exactly the library's:

- open_clip CLIP / CustomTextCLIP with open_clip's `TextTransformer`: hook on `token_embedding`,
  forward `model.encode_text(ids)` (token_embedding -> + positional -> transformer -> ln_final ->
  pool at EOT -> text_projection);
- open_clip `hf-hub:` models whose text tower is an `HFTextEncoder` (BiomedCLIP's PubMedBERT): hook
  on the HF transformer's input embeddings (BERT `word_embeddings`), forward `encode_text(ids)`
  (BERT with the pad mask -> CLS pooler -> projection) - the same as `inputs_embeds` on its
  transformer;
- transformers `CLIPModel` (installed `CLIPTextModel.forward` takes no `inputs_embeds`): hook on
  `text_model.embeddings.token_embedding`, forward `get_text_features(input_ids, attention_mask)`.

Towers are chosen by `Encoder.backend` from `TOWERS` (`register_tower` adds one). The encoder's
parameters are frozen while a tower is in use (`frozen()`); the image tower is never run.

`trim(tokens)` drops the trailing positions that cannot change the features, so that a CoOp step runs
the tower over the prompts' own tokens instead of the whole context (77 for CLIP, 256 for BiomedCLIP):
open_clip's causal text transformers pooled at the EOT token (nothing at or before the EOT attends to a
later position; the library's forward runs with its positional embedding and causal mask cut to the
trimmed length, `OpenClipTower.at_length`), and HF text towers whose pooler ignores padding (the
padding is masked out of attention). Other towers keep every position.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn as nn

from vlm.errors import VlmError

Tokens = dict[str, torch.Tensor]  # "ids" (T, L) plus whatever else the forward needs


class PromptTower:
    """Interface: `tokenize`, `token_embeddings`, `encode`; `lead` special tokens precede the words."""

    lead = 1  # SOT / [CLS]

    def __init__(self, encoder: Any, module: nn.Module) -> None:
        self.encoder = encoder
        self.module = module

    def tokenize(self, texts: Sequence[str]) -> Tokens:
        raise NotImplementedError

    def trim(self, tokens: Tokens) -> Tokens:
        """`tokens` without trailing positions that cannot change `encode`'s features (here: all kept)."""
        return tokens

    def token_embeddings(self, tokens: Tokens) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, tokens: Tokens, embeds: torch.Tensor) -> torch.Tensor:
        """Unnormalised text features (T, E) of the prompts whose token embeddings are `embeds`."""
        raise NotImplementedError

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """The encoder's parameters take no gradient inside the block (their flags are restored after)."""
        params = list(self.module.parameters())
        flags = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p, flag in zip(params, flags):
                p.requires_grad_(flag)


class HookedTower(PromptTower):
    """A tower whose `forward_ids` runs the library's text forward; `embedding` is its token-embedding layer."""

    def __init__(self, encoder: Any, module: nn.Module, embedding: nn.Module) -> None:
        super().__init__(encoder, module)
        self.embedding = embedding

    def forward_ids(self, tokens: Tokens) -> torch.Tensor:
        raise NotImplementedError

    def token_embeddings(self, tokens: Tokens) -> torch.Tensor:
        with torch.no_grad():
            return self.embedding(tokens["ids"]).float()

    def encode(self, tokens: Tokens, embeds: torch.Tensor) -> torch.Tensor:
        def swap(_module: nn.Module, _inputs: Any, out: torch.Tensor) -> torch.Tensor:
            if out.shape != embeds.shape:
                raise VlmError(f"Prompt embeddings {tuple(embeds.shape)} do not fit the token embeddings "
                               f"{tuple(out.shape)} of {self.encoder.id}.")
            return embeds.to(out.dtype)

        handle = self.embedding.register_forward_hook(swap)
        try:
            return self.forward_ids(tokens).float()
        finally:
            handle.remove()


HF_PAD_FREE_POOLERS = ("ClsPooler", "ClsLastHiddenStatePooler", "MeanPooler")  # poolers that ignore padding


class OpenClipTower(HookedTower):
    """open_clip CLIP / CustomTextCLIP (TextTransformer or HFTextEncoder text tower)."""

    def __init__(self, encoder: Any) -> None:
        model = encoder.model
        text = getattr(model, "text", None)
        self.causal: nn.Module | None = None  # holds positional_embedding and the causal attn_mask (trimmable)
        self.pool, self.eos_id, self.pad_id = "", None, None
        if text is None or hasattr(text, "token_embedding"):
            owner = model if text is None else text
            embedding = owner.token_embedding
            self.pool = getattr(owner, "text_pool_type", getattr(owner, "pool_type", ""))
            self.eos_id = getattr(owner, "text_eos_id", getattr(owner, "eos_id", None))
            if (getattr(owner, "attn_mask", None) is not None and getattr(owner, "cls_emb", None) is None
                    and (self.pool == "argmax" or (self.pool == "eos" and self.eos_id is not None))):
                self.causal = owner
        elif hasattr(getattr(text, "transformer", None), "get_input_embeddings"):
            embedding = text.transformer.get_input_embeddings()
            if type(getattr(text, "pooler", None)).__name__ in HF_PAD_FREE_POOLERS:
                self.pad_id = text.config.pad_token_id
        else:
            raise VlmError(f"CoOp cannot reach the token embeddings of {encoder.id}'s text tower "
                           f"({type(text).__name__}).")
        super().__init__(encoder, model, embedding)

    def tokenize(self, texts: Sequence[str]) -> Tokens:
        return {"ids": self.encoder.tokenizer(list(texts)).to(self.encoder.device)}

    def trim(self, tokens: Tokens) -> Tokens:
        """Causal towers: up to the last EOT of the prompts; HF towers: up to their last non-pad token."""
        ids = tokens["ids"]
        if self.causal is not None:
            eot = ids.argmax(dim=-1) if self.pool == "argmax" else (ids == self.eos_id).int().argmax(dim=-1)
            n = int(eot.max()) + 1
        elif self.pad_id is not None:
            words = (ids != self.pad_id).any(dim=0).nonzero()
            n = int(words[-1]) + 1 if len(words) else ids.shape[1]
        else:
            return tokens
        return {**tokens, "ids": ids[:, :n].contiguous()}

    @contextlib.contextmanager
    def at_length(self, n: int) -> Iterator[None]:
        """A causal tower's positional embedding and causal mask cut to `n` positions inside the block."""
        owner = self.causal
        if owner is None or n == owner.positional_embedding.shape[0]:
            yield
            return
        pos, mask = owner.positional_embedding, owner.attn_mask
        owner.positional_embedding = nn.Parameter(pos.detach()[:n], requires_grad=False)
        owner.attn_mask = mask[:n, :n]
        try:
            yield
        finally:
            owner.positional_embedding, owner.attn_mask = pos, mask

    def forward_ids(self, tokens: Tokens) -> torch.Tensor:
        ids = tokens["ids"]
        with self.at_length(ids.shape[1]):
            return self.encoder.model.encode_text(ids)


class TransformersTower(HookedTower):
    """A transformers CLIP-style model (`get_text_features`)."""

    def __init__(self, encoder: Any) -> None:
        model = encoder.model
        owner = getattr(model, "text_model", model)
        try:
            embedding = owner.get_input_embeddings()
        except (NotImplementedError, AttributeError):
            raise VlmError(f"CoOp cannot reach the token embeddings of {encoder.id}'s text tower.") from None
        super().__init__(encoder, model, embedding)

    def tokenize(self, texts: Sequence[str]) -> Tokens:
        enc = self.encoder
        out = enc.tokenizer(list(texts), padding=True, truncation=True, max_length=enc.context_length,
                            return_tensors="pt")
        tokens = {"ids": out["input_ids"].to(enc.device)}
        if "attention_mask" in out:
            tokens["attention_mask"] = out["attention_mask"].to(enc.device)
        return tokens

    def forward_ids(self, tokens: Tokens) -> torch.Tensor:
        from vlm.encoders.transformers import _features

        kwargs = {"attention_mask": tokens["attention_mask"]} if "attention_mask" in tokens else {}
        return _features(self.encoder.model.get_text_features(input_ids=tokens["ids"], **kwargs))


TOWERS: dict[str, Callable[[Any], PromptTower]] = {"open_clip": OpenClipTower, "transformers": TransformersTower}


def register_tower(backend: str, factory: Callable[[Any], PromptTower]) -> None:
    """Make prompt learning available for encoders of `backend`."""
    TOWERS[backend] = factory


def prompt_tower(encoder: Any) -> PromptTower:
    """The prompt tower of an encoder (VlmError for image-only encoders and backends without one)."""
    if not getattr(encoder, "has_text", False):
        raise VlmError(f"{encoder.id} is image-only: prompt learning (CoOp) needs a vision-language model.")
    factory = TOWERS.get(encoder.backend)
    if factory is None:
        raise VlmError(f"Prompt learning (CoOp) is not available for {encoder.backend} encoders ({encoder.id}); "
                       f"it works with the {', '.join(TOWERS)} backends.")
    return factory(encoder)
