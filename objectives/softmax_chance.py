"""A 3-layer softmax MLP that sticks at chance when the learning rate is too high.

The network is the one from the course in the thread: LINEAR -> RELU -> LINEAR
-> RELU -> LINEAR -> SOFTMAX, with hidden layers of 25 and 12 units, Xavier
weights, zero biases, and mean softmax cross-entropy. It learns 6 balanced
classes (K = 6, like the SIGNS hand-sign data set). The data are 1080
synthetic 16 x 16 grey images (flattened to 256 inputs in [0, 1]). Each class
has a smooth blob pattern on a bright background with random brightness, and
pixel noise is added. The model trains on minibatches of 32, reshuffled every
epoch.

What goes wrong (FAILING: Adam, lr 0.1, eps 1e-8): Adam's first steps move every
weight by about lr, in the direction of the sign of its gradient. All inputs
are positive, so each first-layer unit's pre-activation shifts by about
``lr * sum(x)``, the same way for every image. That is ~14 per step here
(256 pixels, mean 0.54). Units pushed below zero die. The survivors get huge
activations, which throw the 12-unit second layer the same way, until every
one of its units is dead for every input. From then on the output is a
constant (the last layer's bias), the gradient to everything below is zero,
and the bias settles on the class prior. The cost sits at ln 6 = 1.792 (1.795-1.805 measured, the bias jitters
at this lr), accuracy is exactly 1/6, and it never recovers. Measured on seeds
0..15: every run collapses, within the first 25 steps, and the 12 units of
the second hidden layer are all dead.

What avoids it (STABLE: the same with lr 0.01, ten times lower): the shifts are
small enough that each layer keeps live units. The loss drops far below ln 6
(under 0.05 by STEPS on seeds 0..9, with training accuracy 87-100%).

In between, lr 0.03 collapses on 4 of 10 seeds. The edge is that sharp.

How this maps to the original forum thread: the course network on SIGNS (12288
inputs, minibatches of 32, Adam). With learning rate 1 or 0.01 the cost stays
at ~1.85-1.9 and train and test accuracy stay at 0.1667. At 0.001 it happens
"sometimes", and at 0.0001 never. The inputs here are 48 times fewer
(256 vs 12288), so each Adam step moves the pre-activations about 48 times
less, and the same thresholds sit at learning rates about ten times higher.

The module is small (a step is well under a millisecond on a CPU) because it
also serves as the workload for the overhead benchmark, where the cost of a
training step should dominate.
"""

from __future__ import annotations

from typing import Iterator

import torch

CLASSES = 6
SIDE = 16
IN_FEATURES = SIDE * SIDE
N_IMAGES = 1080
BATCH = 32
HIDDEN1, HIDDEN2 = 25, 12
NOISE = 0.3

STEPS = 1000

FAILING = {"optimizer": "adam", "lr": 0.1, "eps": 1e-8, "beta1": 0.9, "beta2": 0.999, "weight_decay": 0.0}
STABLE = {"optimizer": "adam", "lr": 0.01, "eps": 1e-8, "beta1": 0.9, "beta2": 0.999, "weight_decay": 0.0}


def _dataset(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced images: a smooth 4x4 pattern per class, upsampled, on a bright background."""
    low = torch.rand(CLASSES, 1, 4, 4, generator=g)
    patterns = torch.nn.functional.interpolate(
        low, size=(SIDE, SIDE), mode="bilinear", align_corners=False
    ).reshape(CLASSES, IN_FEATURES)
    labels = torch.arange(N_IMAGES) % CLASSES
    background = 0.4 + 0.3 * torch.rand(N_IMAGES, 1, generator=g)
    noise = NOISE * torch.randn(N_IMAGES, IN_FEATURES, generator=g)
    images = (background + 0.5 * (patterns[labels] - 0.5) + noise).clamp(0.0, 1.0)
    return images, labels


def model() -> torch.nn.Module:
    """LINEAR(256, 25) -> RELU -> LINEAR(25, 12) -> RELU -> LINEAR(12, 6); Xavier weights, zero biases."""
    net = torch.nn.Sequential(
        torch.nn.Linear(IN_FEATURES, HIDDEN1),
        torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN1, HIDDEN2),
        torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN2, CLASSES),
    )
    for layer in net:
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.xavier_uniform_(layer.weight)
            torch.nn.init.zeros_(layer.bias)
    return net


def batches(seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Minibatches of 32 (images, labels), reshuffled every epoch, forever."""
    g = torch.Generator().manual_seed(seed)
    images, labels = _dataset(g)
    while True:
        order = torch.randperm(N_IMAGES, generator=g)
        x, y = images[order], labels[order]  # one gather per epoch; the batches are views
        for start in range(0, N_IMAGES - BATCH + 1, BATCH):
            yield x[start : start + BATCH], y[start : start + BATCH]


def loss(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return torch.nn.functional.cross_entropy(model(x), y)
