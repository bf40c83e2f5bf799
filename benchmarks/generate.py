"""Generative annotators vs their bare diffusers pipeline calls, in the same process.

For each annotator, the pipeline is built with random weights (`load_random(size)`: `slim` keeps
every width of the real models with one or two blocks each, the only real-width build a CPU
box can hold; `full` is the real architecture for a GPU), then
  bare:  the pipeline(s) called directly on the same inputs (string prompts, PIL images,
         the same generators): what a hand-written script would do;
  stage: the annotator's batched `annotate` (prompt embeddings shared, size grouping, paste-back,
         records) on the same images.
Both sides are warmed on the same batch, then run alternately `--rounds` times; the figure is
throughput stage / bare (goal >= 0.9) and outputs/s of each. Random weights time as trained ones.

CPU (small size, a few minutes):
  python benchmarks/generate.py --size slim --resolution 64 --steps 2 --max-sequence-length 32 --rounds 2
GPU (per GPU, 512², default steps, bf16):
  python benchmarks/generate.py --device cuda --dtype bf16 --size full --resolution 512 --default-steps --images 4
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import annotators  # noqa: F401 - registers every annotator (and installs the torchvision CPU shim)
from annotators.generative import loader
from annotators.generative.common import flux_call_args

NAMES = ("fill_edit", "depth_edit", "instant_style", "redux_style", "analogous_pairs")


def make_items(n: int, side: int, seed: int = 0) -> tuple[list[dict], list[str]]:
    rng = np.random.default_rng(seed)
    items, ids = [], []
    for i in range(n):
        h, w = side, side + 16 * (i % 2)
        image = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        mask = np.zeros((h, w, 3), np.uint8)
        mask[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = (200, 40, 40)
        depth = np.repeat(np.linspace(0, 255, w, dtype=np.uint8)[None, :, None], h, axis=0).repeat(3, axis=2)
        items.append({"image": image, "image.meta": {}, "mask": mask,
                      "mask.meta": {"colours": [[200, 40, 40]], "names": ["object"]}, "depth": depth, "depth.meta": {}})
        ids.append(f"bench-{i:04d}")
    return items, ids


def bare_call(ann, items, ids):
    """The same generations as `ann.annotate`, by direct pipeline calls (inputs prepared beforehand)."""
    jobs = [j for item, image_id in zip(items, ids) for j in ann.plan_image(item, image_id)]
    p = ann.params
    name = ann.name

    def run():
        import torch

        with torch.inference_mode():
            args = flux_call_args(p, jobs)
            prompts = [j.prompt for j in jobs]
            if name == "fill_edit":
                return ann.pipe(prompt=prompts, image=[j.cond["image"] for j in jobs],
                                mask_image=[j.cond["mask"] for j in jobs], **args).images
            if name == "depth_edit":
                return ann.pipe(prompt=prompts, control_image=[j.cond["control"] for j in jobs], **args).images
            if name == "redux_style":
                refs = ann.pipe(prompt=[j.record["reference_prompt"] for j in jobs], **args).images
                # the prior sums a list of references into one conditioning: one prior call per image,
                # then one batched FLUX call
                # (text encoded per image at the same token count as the stage; the prior alone would
                # always encode 512 T5 tokens)
                priors = []
                for j, ref in zip(jobs, refs):
                    text, pooled, _ = ann.pipe.encode_prompt(prompt=j.prompt, prompt_2=None,
                                                             max_sequence_length=p.max_sequence_length)
                    priors.append(ann.prior(image=loader.to_pil(loader.to_uint8([ref])[0]), prompt_embeds=text,
                                            pooled_prompt_embeds=pooled))
                return ann.pipe(prompt_embeds=torch.cat([x.prompt_embeds for x in priors]),
                                pooled_prompt_embeds=torch.cat([x.pooled_prompt_embeds for x in priors]),
                                **args).images
            if name == "instant_style":
                h, w = jobs[0].size
                ann.pipe.set_ip_adapter_scale(0.0)
                blank = ann._image_embeds([loader.to_pil(np.zeros((h, w, 3), np.uint8))] * len(jobs))
                refs = ann.t2i(prompt=[j.record["reference_prompt"] for j in jobs], height=h, width=w,
                               negative_prompt=[p.negative_prompt] * len(jobs), ip_adapter_image_embeds=blank,
                               num_inference_steps=p.steps, guidance_scale=p.guidance,
                               generator=[loader.generator(j.record["reference_seed"], "cpu") for j in jobs],
                               output_type="pil").images
                from annotators.generative.style import style_block_scale

                ann.pipe.set_ip_adapter_scale(style_block_scale(ann.pipe.unet, p.style_scale))
                return ann.pipe(prompt=prompts, negative_prompt=[p.negative_prompt] * len(jobs),
                                image=[j.cond["source"] for j in jobs], strength=p.strength,
                                ip_adapter_image_embeds=ann._image_embeds(refs), num_inference_steps=p.steps,
                                guidance_scale=p.guidance, generator=args["generator"], output_type="np").images
            if name == "analogous_pairs":
                sources = ann.pipe(prompt=prompts, **args).images
                h, w = jobs[0].size
                args.update(num_inference_steps=p.edit_steps, guidance_scale=p.edit_guidance,
                            generator=[loader.generator(j.record["edit_seed"], "cpu") for j in jobs])
                return ann.editor(image=[loader.to_pil(s) for s in loader.to_uint8(sources)],
                                  prompt=[j.record["instruction"] for j in jobs], max_area=h * w,
                                  _auto_resize=False, **args).images
        raise ValueError(name)

    return run, len(jobs)


def stage_call(ann, items, ids):
    return lambda: ann.annotate(items, ids)


def bench(name: str, args) -> dict:
    import torch

    cls = annotators.get(name)
    params = {"resolution": args.resolution, "max_sequence_length": args.max_sequence_length}
    if not args.default_steps:
        params["steps"] = args.steps
        if name == "analogous_pairs":
            params["edit_steps"] = args.steps
    if name == "analogous_pairs":
        params["max_new_tokens"] = args.max_new_tokens
    if args.dtype != "auto":
        params["dtype"] = args.dtype
    ann = cls(params, device=args.device)
    start = time.perf_counter()
    ann.load_random(args.size)
    build_s = time.perf_counter() - start
    items, ids = make_items(args.images, args.resolution)
    if name == "analogous_pairs":
        # the scenes are written once (both sides would write the same text): time the image models
        texts: dict = {}
        write = ann.prompter.write

        def written(reqs, seeds):
            for key in zip(reqs, seeds):
                if key not in texts:
                    texts[key] = write([key[0]], [key[1]])[0]
            return [texts[key] for key in zip(reqs, seeds)]

        ann.prompter.write = written
    bare, n_out = bare_call(ann, items, ids)
    stage = stage_call(ann, items, ids)
    bare(), stage()  # warm both on the same batch
    times = {"bare": [], "stage": []}
    for _ in range(args.rounds):
        for side, fn in (("bare", bare), ("stage", stage)):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times[side].append(time.perf_counter() - t)
    best = {k: min(v) for k, v in times.items()}
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {"annotator": name, "size": args.size, "device": args.device, "dtype": str(ann.dtype).split(".")[-1],
            "resolution": args.resolution, "steps": ann.params.steps, "images": args.images, "outputs": n_out,
            "build_s": round(build_s, 1), "bare_s": round(best["bare"], 3), "stage_s": round(best["stage"], 3),
            "ratio_best": round(best["bare"] / best["stage"], 3), "ratio_median": round(med["bare"] / med["stage"], 3),
            "stage_outputs_per_s": round(n_out / best["stage"], 4),
            "seconds_per_output": round(best["stage"] / n_out, 3)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--annotators", default=",".join(NAMES))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    ap.add_argument("--size", default="slim", choices=["tiny", "slim", "full"])
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--default-steps", action="store_true", help="each annotator's own default steps")
    ap.add_argument("--max-sequence-length", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--images", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--out", default="", help="append JSON lines here")
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    for name in args.annotators.split(","):
        row = bench(name, args)
        line = json.dumps(row)
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(line + "\n")
        import gc

        gc.collect()


if __name__ == "__main__":
    main()
