"""Prompt-set files: one YAML file per MedMNIST dataset, validated on load and expanded into prompts.

File format (``prompts/<flag>.yaml``, shipped as package data of the ``prompts`` package)::

    dataset: pneumoniamnist              # a medmnist.INFO flag
    description: free text               # optional
    classes: [normal, pneumonia]         # exactly medmnist.INFO's labels, in index order
    names:                               # optional: the name(s) put in {label}; default: the class itself
      normal: [healthy lungs, normal lungs]    # a list = several names, all ensembled
    styles:
      clip:                              # style names: lower case, digits, '-' and '_'
        description: CLIP-style templates
        templates: ["a chest X-ray showing {label}."]   # each holds {label} (the only placeholder)
        names: {...}                     # optional: replaces the top-level names for this style
        synonyms: {normal: [clear lungs]}               # optional: extra names, added to the names
        prompts:                         # optional: explicit prompts per class, used as written
          pneumonia: ["This X-ray shows signs of pneumonia."]

A single-label style (binary, multi-class, ordinal) has ``templates`` and/or ``prompts``; every class
must end up with at least one prompt. A multi-label style (chestmnist) puts ``templates``/``prompts``
under ``positive:`` and ``negative:`` (both required), e.g.
``positive: {templates: ["a chest X-ray showing {label}."]}``,
``negative: {templates: ["a chest X-ray showing no {label}."]}``; ``names``/``synonyms`` stay at
the style level and fill {label} on both sides.

Expansion: the prompts of a class are ``[t.format(label=n) for t in templates for n in names]``
followed by its explicit prompts, exact duplicates dropped (first kept). All prompts of a class form
one ensemble (the zero-shot classifier averages their normalised text embeddings).

Every problem is a `VlmError` of the form ``FILE: FIELD (line N): message``.

Modules: `expand` (PromptSet and friends: prompts per class), `schema` (reading and validating a
file), `files` (the shipped files, loading by path or dataset flag).
"""

from vlm.prompts.expand import PromptBlock, PromptSet, PromptStyle
from vlm.prompts.files import load_prompt_set, prompts_dir, shipped_prompt_file, shipped_prompt_files
from vlm.prompts.schema import PLACEHOLDERS, PairStyle, PromptFile, SingleLabelStyle, validate_prompt_set

__all__ = ["PLACEHOLDERS", "PairStyle", "PromptBlock", "PromptFile", "SingleLabelStyle", "PromptSet", "PromptStyle", "load_prompt_set", "prompts_dir", "shipped_prompt_file", "shipped_prompt_files",
           "validate_prompt_set"]
