"""Experiment programs on the built-in world, apart from the library they use.

* :mod:`clef.experiments.settings`: the sizes of an experiment and the stage-1 / stage-2 configs
  they make (shared by the demo and the reproduction);
* :mod:`clef.experiments.world`: the world an experiment runs on, and the label-blind baselines;
* :mod:`clef.experiments.ablation`: the paper's ablation rows as data, and the shipped paper configs;
* :mod:`clef.experiments.reproduce`: ``clef reproduce``, the ablation and zero-shot tables;
* :mod:`clef.experiments.demo`: ``clef demo``, CLEF vs the image-only baseline end to end.

Their figures and number formatting come from the library (:mod:`clef.evaluation`,
:mod:`clef.visualize`).
"""
