"""A model with an op whose backward cannot itself be differentiated, as some fused kernels are.

It trains like any other, but a Hessian-vector product through it raises:
stabsearch's sharpness probe must fail alone, never the trial.
"""

import torch

STEPS = 120


class _SquareBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, grad):
        return 2 * x * grad

    @staticmethod
    def backward(ctx, _):
        raise RuntimeError("derivative for square_backward is not implemented")


class Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return _SquareBackward.apply(x, grad)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.first, self.second = torch.nn.Linear(4, 16), torch.nn.Linear(16, 1)

    def forward(self, x):
        return self.second(torch.tanh(Square.apply(self.first(x))))


def model():
    return Net()


def batches(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 4, generator=g)
    yield x, torch.sin(x.sum(1, keepdim=True))


def loss(model, batch):
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)
