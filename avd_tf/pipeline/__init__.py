"""Whole-pipeline runs: one stage runner (`stages`) and its two configurations.

`demo` (`avd-demo`): every stage in this process on the built-in demo data,
per training seed. `protocol` (`avd-protocol`): a paper protocol per
official split, the training programs as subprocesses, with a marker file
per finished stage.
"""
