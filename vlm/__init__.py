"""medvlm: medical image classification on MedMNIST with vision-language models.

The library behind the `vlm` command: packages `training`, `finetune`, `fewshot`, `encoders`,
`evaluate`, `prompts`, `plots` and `commands` (the CLI layer, the only one that uses rich), and
single-job modules such as `tasks`, `data`, `preprocess`, `zeroshot`, `results`, `compare` and
`methods`. `docs/architecture.md` has the map: one paragraph per package, the data flow, and where to
add a model, an encoder backend, a method kind or a prompt style.
"""

__version__ = "0.1.0"
