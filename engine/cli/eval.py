"""`main.py eval`: the paper's table for a teacher and its student (engine.metrics.evaluate).

    python main.py eval                                   # the bundled pair against the recipe's face source
    python main.py eval --model S --teacher T --data photos/ --samples 2000 --out eval.json
    python main.py eval --teacher runs/x/teacher_004000.safetensors      # a teacher snapshot alone, by FID

Params, FLOPs, FID of teacher and student against the data and of the student against the teacher, LPIPS-VGG and
PSNR of the student against the teacher on shared latents. A model not given is the bundled one when it pairs with
the one given (same W space), else left out. Inception features are cached per model file (see --cache).
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.errors import UserError


def add_arguments(p):
    from engine.metrics.evaluate import DEFAULT_SAMPLES, default_cache_dir

    p.add_argument("--model", "-m", default=None,
                   help="the student (default: the bundled student, when it pairs with --teacher)")
    p.add_argument("--teacher", "-t", default=None,
                   help="the teacher (default: the bundled teacher, when it pairs with --model)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", default=None, help="a folder of real face images to compute FID against "
                                                  "(centre-cropped square, resized to the model's resolution)")
    src.add_argument("--source", default=None, choices=["recipe", "none"],
                     help="recipe (default without --data): the demo models' face source (gan-face-generate); "
                          "none: no FID against data")
    p.add_argument("--samples", "-n", type=int, default=DEFAULT_SAMPLES,
                   help=f"samples per model and from the data (default {DEFAULT_SAMPLES})")
    p.add_argument("--seed", type=int, default=0, help="first seed of the model samples (default 0)")
    p.add_argument("--floor", action="store_true",
                   help="also FID of the data source against a second draw of it: the lowest FID N samples show")
    p.add_argument("--out", "-o", default=None, help="write the results as JSON (e.g. eval.json)")
    p.add_argument("--cache", default=None,
                   help=f"feature cache folder (default {default_cache_dir()}, or $BLAZESTUDIO_CACHE/features)")
    p.add_argument("--no-cache", action="store_true", help="compute every feature again and keep none")
    p.add_argument("--batch", type=int, default=25, help="images per Inception pass (default 25)")
    p.add_argument("--device", default="auto", help="auto (a CUDA GPU when there is one), cpu or cuda[:N]")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _pick_models(model_path, teacher_path):
    """(student, teacher): what was given, completed by the bundled model that pairs with it."""
    from engine import assets
    from engine.io.checkpoints import load_generator
    from engine.io.latents import same_w_space

    if model_path is None and teacher_path is None:
        return load_generator(assets.default_model_path("student")), load_generator(assets.default_model_path(
            "teacher"))
    student = load_generator(model_path) if model_path else None
    teacher = load_generator(teacher_path) if teacher_path else None
    if student is not None and teacher is not None:
        return student, teacher
    which = "teacher" if teacher is None else "student"
    bundled_path = assets.TEACHER if teacher is None else assets.STUDENT
    if bundled_path.exists():
        given = student if student is not None else teacher
        bundled = load_generator(bundled_path)
        if same_w_space(bundled, given):
            if teacher is None:
                teacher = bundled
            else:
                student = bundled
            print(f"the bundled {which} pairs with it: evaluating both")
    return student, teacher


def run(args) -> int:
    import torch

    from engine.device import pick_device
    from engine.metrics.evaluate import FeatureCache, default_cache_dir, evaluate, format_table

    if args.samples < 2:
        raise UserError(f"--samples must be at least 2, not {args.samples}")
    if args.batch < 1:
        raise UserError("--batch must be positive")
    if args.no_cache and args.cache:
        raise UserError("give --cache or --no-cache, not both")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else None
    if out is not None and out.suffix.lower() != ".json":
        raise UserError(f"--out writes JSON; give a .json file, not {out.name}")
    device = pick_device(args.device)
    student, teacher = _pick_models(args.model, args.teacher)
    resolution = (student or teacher).resolution

    data = None
    if args.data:
        from engine.metrics.sources import ImageFolder

        data = ImageFolder(args.data, resolution, count=args.samples, seed=args.seed)
        if len(data) < args.samples:
            print(f"note: {args.data} has {len(data)} images, fewer than --samples {args.samples}; FID against "
                  "data is then estimated from fewer images (compare numbers at equal counts)")
    elif args.source != "none":
        from engine.metrics.evaluate import DATA_SEED0
        from engine.metrics.sources import FaceSource, SourceSamples

        source = FaceSource(device)
        if source.resolution != resolution:
            raise UserError(f"the recipe's face source is {source.resolution} px, the model {resolution} px; "
                            "pass --data with photos, or --source none")
        data = SourceSamples(source, args.samples, DATA_SEED0 + args.seed)

    cache = FeatureCache(None if args.no_cache else (args.cache or default_cache_dir()))
    result = evaluate(student, teacher, data, samples=args.samples, seed=args.seed, cache=cache, device=device,
                      floor=args.floor, progress=not args.no_progress, batch=args.batch)
    print(format_table(result))
    t = result["timings_s"]
    cached = f" (features from the cache: {', '.join(result['cached'])})" if result["cached"] else ""
    print(f"{t['total']:.0f} s{cached}")
    if out is not None:
        from engine.io.checkpoints import atomic_write

        atomic_write(out, lambda tmp: tmp.write_text(json.dumps(result, indent=1) + "\n"))
        print(f"wrote {out}")
    return 0
