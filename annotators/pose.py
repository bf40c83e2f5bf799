"""Human body pose: OpenPose (controlnet_aux) and MediaPipe Pose, both rendered as OpenPose skeletons.

Node `openpose` (both backends): H x W x 3 uint8 at the source size (Graph200K: full
resolution, body only, no hands/face), limbs and joints in OpenPose's 18-keypoint colour
convention drawn by controlnet_aux's own `draw_bodypose`. meta holds the keypoints in the
OpenPose JSON convention, in source pixels:
  {"format": "openpose_body18", "canvas_width": W, "canvas_height": H,
   "people": [{"pose_keypoints_2d": [x0, y0, c0, ..., x17, y17, c17], "score": s}, ...]}
A missing keypoint is (0, 0, 0). Keypoint order (COCO-18): nose, neck, r/l shoulder, elbow,
wrist (right first), r hip, knee, ankle, l hip, knee, ankle, r eye, l eye, r ear, l ear.

meta["confidence"] holds the model's own scores, and the node is held back (quality
`low_confidence`) when they are below the params' thresholds (annotators/quality.py):
- MediaPipe: person_score (BlazePose detector), presence_score (the landmark model's pose-presence
  flag) and the 33 landmarks' visibility and presence;
- OpenPose: person_score, the best person's mean keypoint (heatmap peak) confidence.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from annotators.base import Annotator, AnnotatorParams, NodeOutput, Resources
from core.weights import WeightSpec
from annotators.edges_models import ANNOTATORS_REPO, AuxDetectorAnnotator, AuxParams
from annotators.quality import GateRegion, centre_box, rounded, score_quality
from annotators.registry import register

OPENPOSE_KEYPOINTS = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)

# MediaPipe's 33 BlazePose landmarks -> the 18 OpenPose ones; "neck" is the shoulders' midpoint.
MEDIAPIPE_TO_OPENPOSE: tuple[int | tuple[int, int], ...] = (
    0, (11, 12), 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7,
)

# A person's keypoints: 18 entries of (x, y, confidence) in source pixels, or None when missing.
Person = list  # list[tuple[float, float, float] | None]


def render_openpose(people: list[Person], height: int, width: int) -> np.ndarray:
    """Draw body skeletons on black with controlnet_aux's OpenPose renderer."""
    from controlnet_aux.open_pose.body import Keypoint
    from controlnet_aux.open_pose.util import draw_bodypose

    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    for person in people:
        keypoints = [None if kp is None else Keypoint(kp[0] / width, kp[1] / height) for kp in person]
        canvas = draw_bodypose(canvas, keypoints)
    return canvas


def openpose_meta(people: list[Person], height: int, width: int, scores: list[float]) -> dict:
    """The OpenPose JSON convention (flat x, y, c triples; (0, 0, 0) when missing)."""
    out = []
    for person, score in zip(people, scores):
        flat: list[float] = []
        for kp in person:
            flat.extend([0.0, 0.0, 0.0] if kp is None else [round(float(v), 3) for v in kp])
        out.append({"pose_keypoints_2d": flat, "score": round(float(score), 4)})
    return {"format": "openpose_body18", "canvas_width": int(width), "canvas_height": int(height), "people": out}


def mediapipe_to_openpose(landmarks, height: int, width: int, min_visibility: float) -> Person:
    """Convert MediaPipe's normalised landmarks to 18 OpenPose keypoints in pixels.

    A landmark counts as present when its visibility reaches `min_visibility` and it lies inside
    the image; the neck needs both shoulders.
    """

    def point(i: int):
        lm = landmarks[i]
        if lm.visibility < min_visibility or not (0.0 <= lm.x < 1.0 and 0.0 <= lm.y < 1.0):
            return None
        return (lm.x * width, lm.y * height, float(lm.visibility))

    person: Person = []
    for src in MEDIAPIPE_TO_OPENPOSE:
        if isinstance(src, tuple):
            a, b = point(src[0]), point(src[1])
            person.append(None if a is None or b is None else
                          ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2, min(a[2], b[2])))
        else:
            person.append(point(src))
    return person


def pose_quality(people: list[Person], min_keypoints: int,
                 box: tuple[int, int, int, int] | None = None) -> str | None:
    """`no_person` unless some person has at least `min_keypoints` keypoints (else the map is ~black),
    counting only keypoints inside `box` (y0, y1, x0, x1) when given."""
    def inside(kp) -> bool:
        return kp is not None and (box is None or (box[0] <= kp[1] < box[1] and box[2] <= kp[0] < box[3]))

    best = max((sum(inside(kp) for kp in person) for person in people), default=0)
    return "no_person" if best < min_keypoints else None


def _pose_output(people: list[Person], scores: list[float], height: int, width: int, backend: str,
                 min_keypoints: int, gate_region: str, confidence: dict, minimums: dict[str, float]) -> NodeOutput:
    """The node; `no_person` first (nothing to draw), then `low_confidence` from the model's scores."""
    meta = openpose_meta(people, height, width, scores)
    meta["backend"] = backend
    meta["confidence"] = confidence
    box = centre_box(height, width) if gate_region == "centre_square" else None
    quality = pose_quality(people, min_keypoints, box) or score_quality(confidence, minimums)
    return NodeOutput(render_openpose(people, height, width), meta, quality)


class PoseParams(AuxParams):
    # Quality `no_person` (never sampled) when no detected person has this many of the 18 keypoints
    # inside `gate_region` (default the centre square the exporter keeps; annotators/quality.py).
    min_keypoints: int = Field(4, ge=1, le=18)
    gate_region: GateRegion = "centre_square"
    # Quality `low_confidence` when the best person's keypoints average a heatmap peak below this.
    # Not measured here (no OpenPose weights offline): controlnet_aux already drops persons whose
    # total score per part is under 0.4 (keypoint peaks plus limb scores); a person whose joints
    # average under 0.5 is mostly guessed. Check it on real photos (benchmarks/detector_gates.py).
    min_person_score: float = Field(0.5, ge=0.0, le=1.0)


def openpose_confidence(people: list[Person]) -> dict:
    """person_score: the highest mean keypoint confidence (heatmap peak) of any detected person."""
    means = [float(np.mean([kp[2] for kp in person if kp is not None])) for person in people
             if any(kp is not None for kp in person)]
    return {"person_score": rounded(max(means, default=0.0))}


# --- OpenPose (controlnet_aux) -------------------------------------------------------------


@register
class OpenPose(AuxDetectorAnnotator):
    """OpenPose body (CMU's `body_pose_model.pth`) through controlnet_aux; multi-person, no hands."""

    name = "openpose"
    produces = ("openpose",)
    Params = PoseParams
    version = "2"  # 2: meta["confidence"], quality low_confidence
    weights = (WeightSpec(ANNOTATORS_REPO, "body_pose_model.pth", "OpenPose body"),)

    def _build(self, paths):
        # Body only: OpenposeDetector.from_pretrained would also require the hand and face files.
        from controlnet_aux.open_pose import OpenposeDetector
        from controlnet_aux.open_pose.body import Body

        return OpenposeDetector(Body(str(paths[0])))

    def _build_random(self, size):
        # controlnet_aux's Body takes only a checkpoint path, so the random network is set on it.
        from controlnet_aux.open_pose import OpenposeDetector
        from controlnet_aux.open_pose.body import Body
        from controlnet_aux.open_pose.model import bodypose_model

        body = Body.__new__(Body)
        body.model = bodypose_model()  # one architecture (52M params)
        return OpenposeDetector(body)

    def _modules(self):
        return [self._detector.body_estimation.model]

    def _detect(self, image):
        raise NotImplementedError  # annotate below works on keypoints, not on a rendered map

    def detect_people(self, image: np.ndarray) -> tuple[list[Person], list[float]]:
        """Keypoints (source pixels, with confidences) and total scores of every detected person."""
        from controlnet_aux.open_pose.body import Body
        from controlnet_aux.util import HWC3, resize_image

        h, w = image.shape[:2]
        small = resize_image(HWC3(image), self.params.resolution)
        sh, sw = small.shape[:2]
        candidate, subset = self._detector.body_estimation(np.ascontiguousarray(small[:, :, ::-1]))  # BGR in
        people, scores = [], []
        for body in Body.format_body_result(candidate, subset):
            people.append([None if kp is None else (kp.x * w / sw, kp.y * h / sh, float(kp.score))
                           for kp in body.keypoints])
            scores.append(float(body.total_score))
        return people, scores

    def annotate(self, inputs, image_ids):
        import torch

        out = []
        with torch.inference_mode(), self._autocast():
            for item in inputs:
                image = item["image"]
                people, scores = self.detect_people(image)
                p = self.params
                out.append({"openpose": _pose_output(people, scores, *image.shape[:2], backend="openpose",
                                                     min_keypoints=p.min_keypoints, gate_region=p.gate_region,
                                                     confidence=openpose_confidence(people),
                                                     minimums={"person_score": p.min_person_score})})
        return out


# --- MediaPipe Pose ------------------------------------------------------------------------

# The graph mp.solutions.pose runs on a still image (BlazePose's person detector, then the landmark
# model on the person's box), written out so that it also returns the model's own scores that
# mp.solutions.pose uses but drops: the detector's person score and the landmark model's
# pose-presence flag (its second output tensor). The landmarks are bit-identical to mp.solutions.pose
# (static_image_mode=True, model_complexity=1), and they keep their per-landmark presence.
MEDIAPIPE_POSE_GRAPH = """
input_stream: "image"
output_stream: "pose_landmarks"
output_stream: "pose_detection"
output_stream: "pose_presence"
node { calculator: "ImagePropertiesCalculator" input_stream: "IMAGE_CPU:image" output_stream: "SIZE:image_size" }
node { calculator: "PoseDetectionCpu" input_stream: "IMAGE:image" output_stream: "DETECTIONS:pose_detections" }
node {
  calculator: "SplitDetectionVectorCalculator" input_stream: "pose_detections" output_stream: "pose_detection"
  options { [mediapipe.SplitVectorCalculatorOptions.ext] { ranges: { begin: 0 end: 1 } element_only: true } }
}
node {
  calculator: "PoseDetectionToRoi" input_stream: "DETECTION:pose_detection" input_stream: "IMAGE_SIZE:image_size"
  output_stream: "ROI:pose_rect"
}
node {
  calculator: "PoseLandmarkByRoiCpu" input_stream: "IMAGE:image" input_stream: "ROI:pose_rect"
  output_stream: "LANDMARKS:pose_landmarks"
}
node {
  calculator: "ImageToTensorCalculator" input_stream: "IMAGE:image" input_stream: "NORM_RECT:pose_rect"
  output_stream: "TENSORS:landmark_input"
  options { [mediapipe.ImageToTensorCalculatorOptions.ext] {
    output_tensor_width: 256 output_tensor_height: 256 keep_aspect_ratio: true
    output_tensor_float_range { min: 0.0 max: 1.0 } } }
}
node {
  calculator: "InferenceCalculator" input_stream: "TENSORS:landmark_input" output_stream: "TENSORS:landmark_output"
  options { [mediapipe.InferenceCalculatorOptions.ext] {
    model_path: "mediapipe/modules/pose_landmark/pose_landmark_full.tflite" delegate { xnnpack {} } } }
}
node {
  calculator: "SplitTensorVectorCalculator" input_stream: "landmark_output" output_stream: "presence_tensor"
  options { [mediapipe.SplitVectorCalculatorOptions.ext] { ranges: { begin: 1 end: 2 } } }
}
node {
  calculator: "TensorsToFloatsCalculator" input_stream: "TENSORS:presence_tensor" output_stream: "FLOAT:pose_presence"
}
"""


def mediapipe_pose_graph(min_detection_confidence: float = 0.5):
    """The graph above; landmarks come out for every detection (the presence gate is ours, so its
    score is recorded rather than silently dropped)."""
    from mediapipe.python.solution_base import SolutionBase

    return SolutionBase(graph_config=MEDIAPIPE_POSE_GRAPH,
                        outputs=["pose_landmarks", "pose_detection", "pose_presence"],
                        calculator_params={
                            "posedetectioncpu__TensorsToDetectionsCalculator.min_score_thresh":
                                min_detection_confidence,
                            "poselandmarkbyroicpu__tensorstoposelandmarksandsegmentation__"
                            "ThresholdingCalculator.threshold": 0.0})


def mediapipe_pose(graph, image: np.ndarray) -> tuple[list | None, dict]:
    """(the 33 landmarks or None, the scores: person_score, presence_score; 0 when no person)."""
    result = graph.process(np.ascontiguousarray(image))
    person = float(result.pose_detection.score[0]) if result.pose_detection is not None else 0.0
    presence = float(result.pose_presence) if result.pose_presence is not None else 0.0
    landmarks = None if result.pose_landmarks is None else list(result.pose_landmarks.landmark)
    return landmarks, {"person_score": rounded(person), "presence_score": rounded(presence)}


class MediapipePoseParams(AnnotatorParams):
    # mediapipe 0.10.21 bundles only the model_complexity=1 landmark model.
    model_complexity: Literal[1] = 1
    min_detection_confidence: float = Field(0.5, ge=0.0, le=1.0)
    min_visibility: float = Field(0.5, ge=0.0, le=1.0)
    # Quality `no_person` (never sampled) when the person found has fewer than this many keypoints
    # inside `gate_region` (default the centre square the exporter keeps).
    min_keypoints: int = Field(4, ge=1, le=18)
    gate_region: GateRegion = "centre_square"
    # Quality `low_confidence` below these (benchmarks/detector_gates.py). On its 40 labelled photos
    # the 13 people BlazePose finds have presence >= 0.967 and person score >= 0.587; the one false
    # person (a toy bird under lamps) has presence 0.884. On the demo's 240 crops (--demo) the old
    # thresholds kept 11 false skeletons (presence 0.58-1.0, person score 0.516-0.682; people there
    # >= 0.609): presence 0.9 holds back 4 of them and person score 0.55 (the detector keeps from
    # 0.5) 5 more; 2 remain (0.554, 0.588). Raising min_person_score, unlike
    # min_detection_confidence, leaves the kept skeletons unchanged.
    min_person_score: float = Field(0.55, ge=0.0, le=1.0)
    min_presence: float = Field(0.9, ge=0.0, le=1.0)


def mediapipe_confidence(landmarks: list | None, scores: dict) -> dict:
    """The stored scores: person and presence score, and each landmark's visibility and presence."""
    lms = landmarks or []
    return {**scores, "landmark_visibility": [rounded(lm.visibility) for lm in lms],
            "landmark_presence": [rounded(lm.presence) for lm in lms]}


@register
class PoseMediapipe(Annotator):
    """MediaPipe Pose (BlazePose, one person per image), weights bundled in the mediapipe wheel."""

    name = "pose_mediapipe"
    produces = ("openpose",)
    Params = MediapipePoseParams
    resources = Resources(batch_size=16, concurrency=1, num_gpus=0.0)
    weights = ()  # shipped inside mediapipe==0.10.21; nothing to fetch
    version = "2"  # 2: model scores in meta["confidence"], quality low_confidence

    def load(self) -> None:
        # Every image on its own (no tracking state between images), like static_image_mode=True.
        self._graph = mediapipe_pose_graph(self.params.min_detection_confidence)

    def annotate(self, inputs, image_ids):
        p = self.params
        out = []
        for item in inputs:
            image = item["image"]
            h, w = image.shape[:2]
            landmarks, scores = mediapipe_pose(self._graph, image)
            people, person_scores = [], []
            if landmarks is not None:
                people.append(mediapipe_to_openpose(landmarks, h, w, p.min_visibility))
                person_scores.append(float(np.mean([lm.visibility for lm in landmarks])))
            out.append({"openpose": _pose_output(
                people, person_scores, h, w, backend="mediapipe", min_keypoints=p.min_keypoints,
                gate_region=p.gate_region, confidence=mediapipe_confidence(landmarks, scores),
                minimums={"person_score": p.min_person_score, "presence_score": p.min_presence})})
        return out
