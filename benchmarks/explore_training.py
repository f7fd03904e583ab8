"""Training levers that are not config options, tried on per-epoch curves (what ``bench_baselines.py`` cannot run).

``bench_baselines.py`` measures configurations through ``ncfctl train`` itself. Some levers the
NeuMF-vs-ALS question asks about have no config key, because none of them earned one: an L2
penalty on the embeddings of each batch, AdamW's decoupled weight decay, Adam's epsilon, a
per-epoch learning-rate decay, an exponential moving average of the weights, the embeddings'
initial standard deviation, and NeuMF's GMF half initialised from implicit's ALS factors. This
script trains with ncfctl's own epoch runner and sampler (``ncfctl.training.loop``), applies one
lever, and after every epoch scores validation and test (sampled and full-ranking HR@10). It
prints the mean curve over seeds and the test metrics at the epoch each seed's validation
HR@10 (then NDCG@10) picks, as ``ncfctl train`` would, with the standard error over seeds.

Options (a JSON object; keys absent = ncfctl's defaults): ``type factors layers dropout`` (model),
``neg batch lr epochs`` (training), and the levers ``l2`` (batch embedding L2 weight), ``adamw``
(decoupled weight decay), ``eps`` (Adam epsilon), ``decay`` (lr multiplied by it every epoch),
``ema`` (weight-averaging decay per step; scores use the average), ``sgd`` (SGD with momentum 0.9
at this learning rate instead of Adam), ``init`` (embedding std),
``alsinit`` (ALS regularization; GMF half starts from ALS factors), ``alstuned`` (scale: NeuMF
starts as exactly that multiple of ``ncfctl train --model als``'s score, the MLP half silent; with
``freeze`` the ALS factors stay fixed), ``loss`` (``softmax``: cross-entropy of each positive
against its own ``neg`` negatives; ``bpr``: pairwise log-sigmoid; ``multinomial``: each user's
items against the whole catalogue, ``users_per_step`` users a step; ``ials``: implicit ALS's own
objective by gradient, every cell's squared error against 1 (observed, weight ``1 + alpha``) or 0
(weight 1) plus ``reg`` (or ``gmf_reg`` / ``mlp_reg``) x the embeddings' squared norms; ``fullbce``:
logistic loss on every cell, observed ones weighted ``alpha``), ``bias`` (a learned per-item bias
added to the score), ``eval_every`` (score every n-th epoch and the last).

Usage::

    nice -n 10 python benchmarks/explore_training.py --workdir W '{"neg": 16, "ema": 0.999}' --seeds 1,2,3

``W`` holds a dataset artifact (e.g. one of ``bench_baselines.py``'s ``seed-<n>`` workspaces).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from ncfctl.data.dataset import load_dataset
from ncfctl.evaluation import evaluate, torch_score_fn
from ncfctl.models import NCF, NCFSpec
from ncfctl.training.loop import EpochRunner, FitSettings
from ncfctl.training.optim import make_optimizer
from ncfctl.training.sampling import NegativeSampler, epoch_rng, implicit_examples
from ncfctl.workspace import Workspace


def als_factors(data, factors: int, regularization: float, seed: int):
    """implicit's ALS factors (alpha 1, 15 iterations) for the GMF half."""
    import implicit
    from threadpoolctl import threadpool_limits

    from ncfctl.training.baselines import user_items

    with threadpool_limits(limits=1, user_api="blas"):
        als = implicit.als.AlternatingLeastSquares(
            factors=factors, regularization=regularization, num_threads=1, random_state=seed, use_gpu=False
        )
        als.fit(user_items(data), show_progress=False)
    return als.user_factors, als.item_factors


def tuned_als(data, seed: int) -> NCF:
    """``ncfctl train --model als`` with its defaults (alpha 30, regularization chosen on validation)."""
    from ncfctl.config import load_config
    from ncfctl.training.baselines import fit_baseline

    config = load_config(overrides={"seed": seed, "model.type": "als", "train.threads": 1})
    return fit_baseline(config, data).model


class ItemBiasNCF(NCF):
    """NCF plus a learned per-item bias added to the score (starts at zero)."""

    def __init__(self, spec: NCFSpec):
        super().__init__(spec)
        self.item_bias = torch.nn.Embedding(spec.num_items, 1)
        torch.nn.init.zeros_(self.item_bias.weight)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return super().forward(user, item) + self.item_bias(item).squeeze(-1)


def build(options: dict, data, seed: int) -> NCF:
    spec = NCFSpec.from_layers(
        model_type=options.get("type", "neumf"),
        num_users=data.num_users,
        num_items=data.num_items,
        factors=options.get("factors", 32),
        layers=options.get("layers", [128, 64, 32]),
        dropout=options.get("dropout", 0.0),
    )
    torch.manual_seed(seed)
    model = ItemBiasNCF(spec) if options.get("bias") else NCF(spec)
    with torch.no_grad():
        if "init" in options:
            for module in model.modules():
                if isinstance(module, torch.nn.Embedding):
                    module.weight.normal_(0.0, options["init"])
        if "alsinit" in options:
            users, items = als_factors(data, spec.factors, options["alsinit"], seed)
            model.gmf_user.weight.copy_(torch.from_numpy(users))
            model.gmf_item.weight.copy_(torch.from_numpy(items))
            model.predict.weight[0, : spec.factors] = 1.0
        if "alstuned" in options:  # score = scale x the tuned ALS score; the MLP half starts silent
            als = tuned_als(data, seed)
            model.gmf_user.weight.copy_(als.gmf_user.weight)
            model.gmf_item.weight.copy_(als.gmf_item.weight)
            model.predict.weight.zero_()
            model.predict.weight[0, : spec.factors] = options["alstuned"]
            if options.get("freeze"):
                model.gmf_user.weight.requires_grad_(False)
                model.gmf_item.weight.requires_grad_(False)
    return model


def optimizer(options: dict, model: NCF, settings: FitSettings) -> torch.optim.Optimizer:
    if "adamw" in options:
        return torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=options["adamw"])
    if "sgd" in options:  # plain SGD (momentum 0.9) at this learning rate: rare items move only when sampled
        return torch.optim.SGD(model.parameters(), lr=options["sgd"], momentum=0.9)
    if "eps" in options:
        return torch.optim.Adam(model.parameters(), lr=settings.lr, eps=options["eps"])
    return make_optimizer(model, settings.optimizer, settings.lr, settings.weight_decay, torch.device("cpu"))


def batch_l2_loss(model: NCF, weight: float):
    """BCE plus ``weight`` x the squared norms of the embedding rows the batch uses (Rendle et al. 2020)."""

    def loss_sum(users, items, targets):
        penalty = sum(getattr(model, t)(users).pow(2).sum() for t in ("gmf_user", "mlp_user") if hasattr(model, t))
        penalty += sum(getattr(model, t)(items).pow(2).sum() for t in ("gmf_item", "mlp_item") if hasattr(model, t))
        return F.binary_cross_entropy_with_logits(model(users, items), targets, reduction="sum") + weight * penalty

    return loss_sum


def listwise_epoch(model: NCF, opt: torch.optim.Optimizer, examples, negatives: int, batch: int, loss: str) -> None:
    """One epoch of a loss over each positive and its own ``negatives`` (rows of ``1 + negatives`` scores).

    ``softmax``: cross-entropy of the positive against its negatives (sampled softmax);
    ``bpr``: mean of -log sigmoid(positive - negative). A step holds ``batch`` scores, as BCE's does.
    """
    rows = examples.rows
    users = torch.from_numpy(examples.users).long()
    items = torch.from_numpy(examples.items).long().view(1 + negatives, rows)
    per_step = max(1, batch // (1 + negatives))
    model.train()
    for chunk in torch.randperm(rows).split(per_step):
        scores = model(users[chunk].repeat_interleave(1 + negatives), items[:, chunk].T.reshape(-1))
        scores = scores.view(len(chunk), 1 + negatives)
        if loss == "softmax":
            value = F.cross_entropy(scores, torch.zeros(len(chunk), dtype=torch.long))
        else:
            value = -F.logsigmoid(scores[:, :1] - scores[:, 1:]).mean()
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()


def multinomial_epoch(model: NCF, opt: torch.optim.Optimizer, data, users_per_step: int) -> None:
    """One epoch of the multinomial likelihood: a user's training items against the whole catalogue."""
    targets = torch.zeros(data.num_users, data.num_items)
    targets[torch.from_numpy(data.train.users).long(), torch.from_numpy(data.train.items).long()] = 1.0
    catalogue = torch.arange(data.num_items)
    model.train()
    for chunk in torch.randperm(data.num_users).split(users_per_step):
        scores = model(chunk.repeat_interleave(data.num_items), catalogue.repeat(len(chunk))).view(len(chunk), -1)
        wanted = targets[chunk]
        value = -(F.log_softmax(scores, dim=1) * wanted).sum() / wanted.sum()
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()


def all_item_scores(model: NCF, users: torch.Tensor) -> torch.Tensor:
    """Differentiable scores of every item for ``users`` (TorchScorer.all_items' algebra, with autograd)."""
    spec = model.spec
    out_weight = model.predict.weight[0]
    scores = model.predict.bias + torch.zeros(len(users), spec.num_items)
    if spec.has_gmf:
        scores = scores + (model.gmf_user(users) * out_weight[: spec.factors]) @ model.gmf_item.weight.T
    if spec.has_mlp:
        first, *rest = model.linear_layers()
        dim = spec.mlp_user_dim
        item_pre = model.mlp_item.weight @ first.weight[:, dim:].T + first.bias
        user_pre = model.mlp_user(users) @ first.weight[:, :dim].T
        h = torch.relu(user_pre[:, None, :] + item_pre[None, :, :])
        for layer in rest:
            h = torch.relu(layer(h))
        scores = scores + h @ out_weight[-spec.hidden[-1] :]
    return scores


def full_catalogue_epoch(model: NCF, opt: torch.optim.Optimizer, targets: torch.Tensor, options: dict) -> None:
    """One epoch of a loss over every (user, item) cell, no sampling: ``ials`` is implicit ALS's own
    objective (squared error against 1, weight 1 + alpha, or 0, weight 1), ``fullbce`` the logistic
    loss (observed cells weighted alpha); plus ``reg`` x the squared norms of the embeddings (the
    items' share scaled to the step's users, so an epoch adds them once)."""
    alpha, reg = options.get("alpha", 30.0), options.get("reg", 100.0)
    num_users = targets.shape[0]
    tables = [t for t in ("gmf", "mlp") if hasattr(model, f"{t}_user")]
    model.train()
    for chunk in torch.randperm(num_users).split(options.get("users_per_step", 32)):
        wanted = targets[chunk]
        scores = all_item_scores(model, chunk)
        if options["loss"] == "fullbce":  # logistic loss on every cell, observed ones weighted alpha
            value = (alpha * wanted * F.softplus(-scores) + (1.0 - wanted) * F.softplus(scores)).sum()
        else:
            value = ((1.0 + alpha * wanted) * (wanted - scores).pow(2)).sum()
        for table in tables:
            reg = options.get(f"{table}_reg", options.get("reg", 100.0))
            value = value + reg * getattr(model, f"{table}_user")(chunk).pow(2).sum()
            value = value + reg * len(chunk) / num_users * getattr(model, f"{table}_item").weight.pow(2).sum()
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()


def run_seed(options: dict, data, sampler: NegativeSampler, seed: int) -> list[dict]:
    """One training run; validation and test metrics after every epoch."""
    model = build(options, data, seed)
    settings = FitSettings(
        epochs=options.get("epochs", 12),
        batch_size=options.get("batch", 4096),
        lr=options.get("lr", 0.002),
        negatives=options.get("neg", 4),
        device="cpu",
        seed=seed,
    )
    opt = optimizer(options, model, settings)
    averaged, after_step = model, None
    if "ema" in options:
        averaged = copy.deepcopy(model)
        targets, live, weight = list(averaged.parameters()), list(model.parameters()), 1.0 - options["ema"]

        def after_step(_model):
            with torch.no_grad():
                torch._foreach_lerp_(targets, live, weight)

    runner = EpochRunner(model, model, opt, settings, torch.device("cpu"), False, after_step)
    if "l2" in options:
        runner._loss_sum = batch_l2_loss(model, options["l2"])
    started, curve = time.perf_counter(), []
    targets = torch.zeros(data.num_users, data.num_items)
    targets[torch.from_numpy(data.train.users).long(), torch.from_numpy(data.train.items).long()] = 1.0
    if "alstuned" in options:  # epoch 0: the ALS start itself
        scorer = torch_score_fn(averaged)
        val, test = evaluate(scorer, data, "val"), evaluate(scorer, data, "test")
        curve.append({"epoch": 0, "val": val, "test": test, "seconds": 0.0})
    for epoch in range(1, settings.epochs + 1):
        torch.manual_seed(seed * 1_000_003 + epoch)
        for group in opt.param_groups:
            group["lr"] = group.setdefault("initial_lr", group["lr"]) * options.get("decay", 1.0) ** (epoch - 1)
        examples = implicit_examples(data.train, sampler, settings.negatives, epoch_rng(seed, epoch))
        if options.get("loss") in ("ials", "fullbce"):
            full_catalogue_epoch(model, opt, targets, options)
        elif options.get("loss") == "multinomial":
            multinomial_epoch(model, opt, data, options.get("users_per_step", 32))
        elif "loss" in options:
            listwise_epoch(model, opt, examples, settings.negatives, settings.batch_size, options["loss"])
        else:
            runner.run(examples)
        if epoch % options.get("eval_every", 1) and epoch != settings.epochs:
            continue
        scorer = torch_score_fn(averaged)
        val, test = evaluate(scorer, data, "val"), evaluate(scorer, data, "test")
        curve.append({"epoch": epoch, "val": val, "test": test, "seconds": time.perf_counter() - started})
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("options", help="JSON object of options (see the module docstring)")
    parser.add_argument("--workdir", required=True, help="a workspace holding the dataset artifact")
    parser.add_argument("--seeds", default="1,2,3")
    args = parser.parse_args()
    torch.set_num_threads(1)
    options = json.loads(args.options)
    data = load_dataset(Workspace(args.workdir).require_latest("dataset", "run bench_baselines.py first"))
    sampler = NegativeSampler(data.train, data.num_items)
    curves = {int(seed): run_seed(options, data, sampler, int(seed)) for seed in args.seeds.split(",")}
    epochs = range(len(next(iter(curves.values()))))
    for split in ("val", "test"):
        means = [
            f"{np.mean([c[e][split]['hr'] for c in curves.values()]):.3f}/"
            f"{np.mean([c[e][split]['full_hr'] for c in curves.values()]):.3f}"
            for e in epochs
        ]
        print(f"mean {split} HR@10 / full HR@10 by epoch: {' '.join(means)}")
    picks = [max(c, key=lambda r: (r["val"]["hr"], r["val"]["ndcg"])) for c in curves.values()]
    report = {"options": options, "seeds": list(curves), "kept_epochs": [p["epoch"] for p in picks]}
    for key in ("hr", "full_hr"):
        values = [p["test"][key] for p in picks]
        report[key] = (
            statistics.fmean(values),
            statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0,
        )
    report["seconds_to_kept"] = statistics.fmean(p["seconds"] for p in picks)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
