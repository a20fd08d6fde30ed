"""The ablation a reviewer asks for (`avd-ablate`): AVD(RGB) settings x seeds against baselines.

`grid` (the settings), `control` (the untrained E), `run` (`run_ablation`),
`report` (mean +- std rows: table, CSV, plot).
"""
from avd_tf.ablate.grid import Grid
from avd_tf.ablate.report import mean_std, write_readme
from avd_tf.ablate.run import FinetuneSettings, run_ablation

__all__ = ["FinetuneSettings", "Grid", "mean_std", "run_ablation", "write_readme"]
