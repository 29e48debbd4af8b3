"""Print every parameter's lr group, lr multiplier, weight decay and trainability for a config.

python -m sam2_scale.train.param_groups --config configs/sav_sa1b_full.yaml [key.sub=value ...]
"""

import argparse

from ..config import load_config
from ..model import build_sam2
from .optim import format_param_rules, param_rules


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m sam2_scale.train.param_groups", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="YAML config (default: built-in defaults)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. model.size=large")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    model = build_sam2(cfg.model.size, image_size=cfg.model.image_size, device="meta")
    rules = param_rules(model, cfg.optim)
    print(format_param_rules(rules))
    groups = {(r.lr_group, r.lr_scale, r.weight_decay) for r in rules if r.trainable}
    frozen = sum(not r.trainable for r in rules)
    print(f"\n{len(rules)} parameter tensors, {len(groups)} optimizer groups, {frozen} frozen")


if __name__ == "__main__":
    main()
