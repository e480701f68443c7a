"""Training one trial: the model-module contract, the default loop, the optimizer it builds and the probes.

- :mod:`~stabsearch.training.loader`: the model-module contract and its checks;
- :mod:`~stabsearch.training.trainer`: ``Run``, ``StopRun``, ``TrainResult`` and the default loop;
- :mod:`~stabsearch.training.optim`: one configuration built as a torch optimizer and schedule;
- :mod:`~stabsearch.training.telemetry`: what the probes read after training (second moments, sharpness, dead units);
- :mod:`~stabsearch.training.device`: choosing the device and moving batches onto it.
"""
