"""`clef zeroshot`: the two zero-shot protocols of the paper's table (docs/method.md §5)."""

from __future__ import annotations

import argparse
from pathlib import Path

from clef.errors import UserError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "zeroshot",
        help="zero-shot: unseen expressions, or AU-trained model scoring expressions",
        description="Protocol 'expressions': fine-tune FER (the config) on the seen expressions only and "
        "score every test image against all class names; protocol 'au-to-fer': score FER images with an "
        "AU-only model (--model, or fine-tuned now from the AU --config) against expression names and "
        "descriptions. Writes OUT/zeroshot.{json,md}; chance is printed beside every number.",
    )
    protocols = parser.add_subparsers(dest="protocol", metavar="PROTOCOL")
    protocols.required = True
    expr = protocols.add_parser(
        "expressions", help="train FER on the seen expressions, score unseen ones against all class names"
    )
    au = protocols.add_parser(
        "au-to-fer", help="score FER images with an AU-only model (names, descriptions)"
    )
    for sub in (expr, au):
        sub.add_argument("--config", type=Path, help="FER config (expressions) or AU config (au-to-fer)")
        sub.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
        sub.add_argument("--out", type=Path, help="output folder (default: RUN_DIR/zeroshot)")
        sub.add_argument("--quiet", action="store_true", help="no progress bars")
        sub.set_defaults(func=run)
    expr.add_argument(
        "--seen",
        default="happiness,sadness,anger,neutral",
        help="comma-separated seen classes (default: docs/method.md §5's split)",
    )
    au.add_argument(
        "--model", type=Path, help="an AU fine-tuned checkpoint (RUN_DIR/model); else --config is fine-tuned"
    )
    au.add_argument("--fer-dataset", default="rafdb", help="FER dataset loader (default rafdb)")
    au.add_argument("--fer-root", type=Path, required=True, help="FER dataset folder")
    au.add_argument("--fer-split", default="test", help="split scored (default test; 'all' = every image)")


def run(args: argparse.Namespace) -> int:
    from clef.config import load_config
    from clef.finetune import FinetuneConfig, finetune
    from clef.run_config import resolve_device
    from clef.zeroshot import au_to_fer_protocol, unseen_expression_protocol, write_zeroshot

    cfg = load_config(FinetuneConfig, args.config, args.overrides)
    progress = not args.quiet
    if args.protocol == "expressions":
        seen = tuple(s.strip() for s in args.seen.split(",") if s.strip())
        result = unseen_expression_protocol(
            cfg, seen=seen, kinds=("names", "descriptions"), progress=progress
        )
        title = f"Zero-shot, unseen expressions ({cfg.data.dataset})"
    else:
        from clef.data import load_dataset

        if args.fer_root is None:
            raise UserError("au-to-fer needs --fer-root (the FER dataset folder)")
        model = args.model
        if model is None:
            if cfg.method.task != "au":
                raise UserError(
                    "au-to-fer without --model fine-tunes the --config, which must have method.task=au"
                )
            model = finetune(cfg, progress=progress).checkpoint
        records = load_dataset(args.fer_dataset, str(args.fer_root))
        if args.fer_split != "all":
            if "split" not in records or not (records["split"] == args.fer_split).any():
                raise UserError(
                    f"{args.fer_root}: no record in split {args.fer_split!r}; use --fer-split all"
                )
            records = records[records["split"] == args.fer_split]
        result = au_to_fer_protocol(
            model, records, prompt_set=cfg.prompt_set, device=resolve_device(cfg.device), progress=progress
        )
        title = f"Zero-shot, AU-trained model on {args.fer_dataset}"
    out = args.out or Path(cfg.run_dir) / "zeroshot"
    write_zeroshot(result, out, title=title)
    for s in result.scores:
        print(
            f"{s.protocol} ({s.texts}): unseen-class images {100 * s.accuracy_unseen:.1f} % "
            f"(chance {100 * s.chance_unseen:.1f}), all images {100 * s.accuracy_all:.1f} % "
            f"(chance {100 * s.chance_all:.1f})"
        )
    print(f"files in {out}")
    return 0
