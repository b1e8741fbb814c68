"""`clef explain`: where a prompt looks in a face, and which of its tokens matter (a figure + arrays)."""

from __future__ import annotations

import argparse
from pathlib import Path

from clef.commands.argtypes import writable_file


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "explain",
        help="image relevance map and per-token relevance of prompts for one face (PNG + .npz)",
        description=(
            "For each prompt, the relevance of the face's regions and of the prompt's tokens for the "
            "model's score scale * cos(image, prompt): Grad-CAM on the last block of a CNN image tower, "
            "gradient-weighted attention relevance (Chefer et al. 2021) on transformer towers and on "
            "the text tower. Writes OUT.png and OUT.npz. See docs/predict.md."
        ),
    )
    p.add_argument("model", help="a fine-tuned model: RUN_DIR/model")
    p.add_argument("image", type=Path, help="an image with a face (or an aligned crop with --aligned)")
    p.add_argument("--text", action="append", default=[], help="a label text to explain (repeatable)")
    p.add_argument("--label", action="append", default=[], help="a trained label id, e.g. AU12 (repeatable)")
    p.add_argument(
        "--prompt",
        default=None,
        help="template for the texts, with {} (default: the model's first name template; '{}': as written)",
    )
    p.add_argument("--out", required=True, type=writable_file, help="output prefix: OUT.png and OUT.npz")
    p.add_argument("--aligned", action="store_true", help="the image is an aligned face crop: no detection")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from PIL import Image

    from clef.data.dataset import square_image
    from clef.errors import UserError
    from clef.explain import explain, save_explanations
    from clef.finetuned import load_finetuned
    from clef.model import fill_templates
    from clef.predict import PredictConfig, Predictor
    from clef.prep.sources import read_image

    model, _ = load_finetuned(args.model, device="cpu")
    space = model.space
    unknown = [label for label in args.label if label not in space.ids]
    if unknown:
        raise UserError(f"unknown label(s) {', '.join(unknown)}; the model's labels: {', '.join(space.ids)}")
    texts = [space.names[space.ids.index(label)] for label in args.label] + list(args.text)
    if not texts:
        raise UserError("give at least one --text or --label")
    template = args.prompt if args.prompt is not None else model.name_templates[0]
    prompts = fill_templates(texts, [template])

    predictor = Predictor(model, PredictConfig(aligned=args.aligned), device=args.device)
    image = read_image(args.image)
    if args.aligned:
        face = square_image(Image.fromarray(image), model.clef.preprocess.image_size)
    else:
        found = predictor.faces([image])[0]
        if len(found.faces) == 0:
            raise UserError(f"{args.image}: no face found (use --aligned for an aligned crop)")
        face = found.crops[0]
    explanations = [explain(predictor.model.clef, face, prompt) for prompt in prompts]
    paths = save_explanations(explanations, args.out)
    for e in explanations:
        content = [(t, r) for t, r, s in zip(e.tokens, e.token_relevance, e.special, strict=True) if not s]
        top = max(content, key=lambda tr: tr[1])[0] if content else "-"
        print(f'explain: "{e.text}": s = {e.score:.3f} ({e.method}), most relevant token "{top}"')
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
