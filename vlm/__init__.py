"""medvlm: medical image classification on MedMNIST with vision-language models.

The library behind the `vlm` command. Modules, one job each:

- `vlm.tasks`      TaskSpec for the 18 MedMNIST datasets, read from `medmnist.INFO`
- `vlm.data`       locate, verify, download and load splits as resident uint8 tensors
- `vlm.preprocess` tensor preprocessing on any device (float, grey->RGB, normalise, resize)
- `vlm.evaluate`   the one evaluator: MedMNIST AUC/ACC in torch, CIs, ROC, confusion
- `vlm.results`    run records (JSON + scores) written atomically under a runs folder
"""

__version__ = "0.1.0"
