"""Train the bundled digits classifier (``pitsolve.adapters.digits.CLASSIFIER_DIR``).

:class:`pitsolve.adapters.digits.DigitsClassifier` (a four-convolution SiLU CNN
with 64 globally averaged penultimate features) on the ``"train"`` split of
:func:`pitsolve.adapters.digits.load_digits_images`, with random shifts of up
to ``--max-shift`` pixels so that its features do not hinge on exact
centring, cross-entropy, AdamW with a cosine-decayed rate, a fixed seed.
Prints the train and test accuracy every epoch and saves
``model.safetensors`` and ``config.json`` (with the final test accuracy)
into ``--out``.  Its penultimate features define the Fréchet distance of
:func:`pitsolve.adapters.digits.frechet_distance`.

    python examples/train_digits_classifier.py              # 1–3 min on 2 CPU cores
    python examples/train_digits_classifier.py --smoke --out /tmp/clf
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F

from pitsolve.adapters.digits import CLASSIFIER_DIR, DigitsClassifier, load_digits_images, save_classifier
from pitsolve.adapters.digits.data import random_shift


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=CLASSIFIER_DIR, help="output folder (default: the package's)")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--max-shift", type=int, default=1, help="random translation augmentation, pixels")
    p.add_argument("--features", type=int, default=64, help="width of the penultimate (feature) layer")
    p.add_argument("--seed", type=int, default=0)
    # One thread: on 2 cores shared with other processes, 2 OpenMP threads stall each other (measured
    # 0.28 s/step with 1 thread against > 5 s/step with 2 under a load of 3); 2 help on an idle machine.
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--smoke", action="store_true", help="one epoch, for tests")
    args = p.parse_args(argv)
    if args.smoke:
        args.epochs = 1
    return args


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    return (model(images).argmax(dim=1) == labels).double().mean().item()


def _run(args: argparse.Namespace) -> Dict[str, float]:
    x_train, y_train = load_digits_images("train")
    x_test, y_test = load_digits_images("test")
    with torch.random.fork_rng():
        torch.manual_seed(args.seed)
        model = DigitsClassifier(features=args.features)
    gen = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    n_batches = math.ceil(len(x_train) / args.batch_size)
    total, step, start = args.epochs * n_batches, 0, time.perf_counter()
    print(f"DigitsClassifier: {sum(p.numel() for p in model.parameters()):,} parameters; {len(x_train)} train images")
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=gen)
        running = 0.0
        for b in range(n_batches):
            index = order[b * args.batch_size : (b + 1) * args.batch_size]
            x = random_shift(x_train[index], args.max_shift, gen)
            for group in opt.param_groups:
                group["lr"] = args.lr * 0.5 * (1.0 + math.cos(math.pi * step / total))
            # Dropout draws from the global generator: fork it so training leaves the caller's state alone.
            with torch.random.fork_rng():
                torch.manual_seed(args.seed * 100_003 + step)
                loss = F.cross_entropy(model(x), y_train[index])
                opt.zero_grad(set_to_none=True)
                loss.backward()
            opt.step()
            running += loss.item()
            step += 1
        train_acc, test_acc = accuracy(model, x_train, y_train), accuracy(model, x_test, y_test)
        print(
            f"epoch {epoch + 1:3d}  {time.perf_counter() - start:6.1f} s  loss {running / n_batches:.4f}  "
            f"train acc {train_acc:.4f}  test acc {test_acc:.4f}",
            flush=True,
        )
    seconds = time.perf_counter() - start
    result = dict(train_accuracy=train_acc, test_accuracy=test_acc, epochs=args.epochs, seconds=seconds)
    save_classifier(model, args.out, **{k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()})
    print(f"saved to {args.out}: test accuracy {test_acc:.4f} ({len(x_test)} images)")
    return result


def main(argv: Optional[Sequence[str]] = None):
    """Parse ``argv``, train and save; returns the summary written to disk. Restores torch's thread count."""
    args = parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
