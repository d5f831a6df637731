"""What a phone scores: a run's exported .tflite files through MediaPipe Tasks' ImageClassifier, against
kclassify's own path and the emulation in kclassify.data.phone, on the run's test photos (issue 26).

    python benchmarks/phone_path.py saved_models/RUN [--data PATH/TO/IMAGES]

Each photo is decoded once (Pillow, full size) and the same pixels go to all three paths, so only the
resize differs: kclassify's antialiased resize (predict), MediaPipe's own (ImageClassifier.classify), and
mediapipe_resize followed by the same predictor. Needs `pip install ".[dev]"` (mediapipe).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a run folder with export/*.tflite")
    parser.add_argument("--data", type=Path, help="where split.csv's relative paths are (default: config.yaml's data)")
    args = parser.parse_args()

    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision
    from PIL import Image

    from kclassify.config import from_yaml_file
    from kclassify.data.phone import mediapipe_resize
    from kclassify.inference import load_predictor

    root = args.data or Path(from_yaml_file(args.run / "config.yaml").data.data)
    with open(args.run / "split.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    labels = (args.run / "labels.txt").read_text().split()
    truth = np.array([labels.index(r["label"]) for r in rows])
    photos = [np.asarray(Image.open(root / r["path"]).convert("RGB")) for r in rows]
    print(f"{args.run}: {len(rows)} test photos, {photos[0].shape[1]}x{photos[0].shape[0]} px (first)")
    print(f"{'file':20} {'kclassify':>9} {'mediapipe':>9} {'emulated':>9} {'emul=mp':>8} {'kcl=mp':>8}")
    for path in sorted((args.run / "export").glob("*.tflite")):
        predictor = load_predictor(path)
        ours = np.array([predictor.predict(p[None]).argmax() for p in photos])
        emulated = predictor.predict(np.stack([mediapipe_resize(p, predictor.image_size) for p in photos])).argmax(1)
        options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)), max_results=1)
        with vision.ImageClassifier.create_from_options(options) as classifier:
            phone = np.array([classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB,
                                                           data=np.ascontiguousarray(p)))
                              .classifications[0].categories[0].index for p in photos])
        print(f"{path.name:20} {np.mean(ours == truth):9.4f} {np.mean(phone == truth):9.4f} "
              f"{np.mean(emulated == truth):9.4f} {np.mean(emulated == phone):8.2%} {np.mean(ours == phone):8.2%}")


if __name__ == "__main__":
    main()
