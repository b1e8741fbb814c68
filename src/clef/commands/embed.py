"""`clef embed`: a dataset's image embeddings under a fine-tuned model, on disk, with a t-SNE map."""

from __future__ import annotations

import argparse

from clef.commands.argtypes import int_at_least, writable_dir

COLOR_BY = ("expression", "activity", "subject")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "embed",
        help="a dataset's image embeddings (.npy / safetensors + record table) and a t-SNE map",
        description=(
            "Embed every image of a dataset (or its --split / --fold test selection) with a fine-tuned "
            "model's image tower; write DIR/embeddings.{npy,safetensors}, DIR/records.{csv,parquet} "
            "in the same row order, DIR/embeddings.json and DIR/tsne.png coloured by --color-by."
        ),
    )
    p.add_argument("model", help="a fine-tuned model: RUN_DIR/model")
    p.add_argument("dataset", help="dataset loader name (bp4d, disfa, rafdb, ...)")
    p.add_argument("root", help="dataset root folder")
    p.add_argument("--out", required=True, type=writable_dir, help="output folder")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--split", help="only this official split (default: every record)")
    which.add_argument("--fold", type=int_at_least(1), help="only this protocol fold's test subjects")
    p.add_argument(
        "--color-by", choices=COLOR_BY, default="expression", help="t-SNE colours (default expression)"
    )
    p.add_argument("--format", choices=("npy", "safetensors"), default="npy", help="embedding file format")
    p.add_argument("--table", choices=("csv", "parquet"), default="csv", help="record table format")
    p.add_argument(
        "--tsne-max", type=int_at_least(10), default=3000, help="points in the t-SNE (seeded sample)"
    )
    p.add_argument("--no-tsne", action="store_true", help="write the embeddings only")
    p.add_argument("--batch-size", type=int_at_least(1), default=256)
    p.add_argument("--workers", type=int_at_least(0), default=0, help="image-decoding processes")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    p.add_argument("--seed", type=int, default=0, help="t-SNE and sampling seed")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from clef.data import load_dataset
    from clef.data.folds import test_selection
    from clef.embeddings import write_embeddings
    from clef.errors import UserError
    from clef.finetuned import load_finetuned
    from clef.inference import embed_images
    from clef.predict import model_id
    from clef.run_config import resolve_device
    from clef.visualize import plot_tsne

    device = resolve_device(args.device)
    model, meta = load_finetuned(args.model, device=device)
    records = load_dataset(args.dataset, args.root)
    where = "every record"
    if args.split is not None or args.fold is not None:
        records, where = test_selection(records, args.fold, args.split)
    records = records.reset_index(drop=True)
    emb = embed_images(model.clef, records, args.batch_size, device, args.workers, not args.quiet).numpy()
    about = {
        "model": model_id(args.model, meta),
        "dataset": args.dataset,
        "root": str(args.root),
        "selection": where,
    }
    paths = write_embeddings(args.out, emb, records, args.format, args.table, about)
    print(
        f"embed: {len(records)} records ({where}), {emb.shape[1]} dimensions -> {', '.join(map(str, paths))}"
    )
    if args.no_tsne:
        return 0
    values = records[args.color_by]
    coloured = np.flatnonzero(values.notna().to_numpy())
    if len(coloured) < 3:
        present = [c for c in COLOR_BY if c in records and records[c].notna().sum() >= 3]
        raise UserError(
            f"--color-by {args.color_by}: the records have {len(coloured)} values; "
            f"columns with values: {', '.join(present) or 'none'}"
        )
    rng = np.random.default_rng(args.seed)
    if len(coloured) > args.tsne_max:
        coloured = np.sort(rng.choice(coloured, args.tsne_max, replace=False))
    title = f"{args.dataset} ({where}), {len(coloured)} images, coloured by {args.color_by}"
    path = plot_tsne(
        [(f"{meta.get('task') or 'model'} image embeddings", emb[coloured])],
        values.to_numpy()[coloured],
        args.out / "tsne.png",
        seed=args.seed,
        title=title,
    )
    print(f"embed: t-SNE of {len(coloured)} points -> {path}")
    return 0
