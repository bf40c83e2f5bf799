"""Pose annotators: OpenPose on a random-weight build of controlnet_aux's network, MediaPipe on real photos."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest

import annotators.pose as pose
from core.weights import MissingWeightsError
from annotators.registry import get


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="module")
def mediapipe_pose():
    ann = get("pose_mediapipe")()
    ann.load()
    return ann


@pytest.fixture(scope="module")
def openpose_random():
    ann = get("openpose")({"resolution": 64})
    ann.load_random("tiny")
    return ann


def _people(meta):
    return [np.asarray(p["pose_keypoints_2d"], dtype=float).reshape(18, 3) for p in meta["people"]]


def test_mediapipe_finds_the_astronaut_inside_the_image(mediapipe_pose, astronaut):
    out = mediapipe_pose.annotate([{"image": astronaut}], ["astronaut"])[0]
    node = out["openpose"]
    h, w = astronaut.shape[:2]
    assert node.array.shape == (h, w, 3) and node.array.dtype == np.uint8
    meta = node.meta
    assert meta["format"] == "openpose_body18" and (meta["canvas_width"], meta["canvas_height"]) == (w, h)
    (person,) = _people(meta)
    present = person[:, 2] > 0
    assert present.sum() >= 8  # a half-body portrait: head, neck, shoulders, elbows at least
    xs, ys = person[present, 0], person[present, 1]
    assert (xs >= 0).all() and (xs < w).all() and (ys >= 0).all() and (ys < h).all()
    names = pose.OPENPOSE_KEYPOINTS
    nose, neck = person[names.index("nose")], person[names.index("neck")]
    r_sh, l_sh = person[names.index("right_shoulder")], person[names.index("left_shoulder")]
    assert nose[2] > 0 and neck[2] > 0 and r_sh[2] > 0 and l_sh[2] > 0
    assert nose[1] < neck[1]  # the head is above the neck
    assert nose[1] < h / 2  # the face is in the upper half of the portrait
    assert r_sh[0] < l_sh[0]  # facing the camera: the person's right shoulder is on the image's left
    # The skeleton is drawn where the keypoints are: the pixel at the nose is coloured.
    x, y = int(nose[0]), int(nose[1])
    assert node.array[y, x].max() > 0
    assert 0.005 < (node.array.max(axis=2) > 0).mean() < 0.5


def test_mediapipe_colours_follow_openpose(mediapipe_pose, astronaut):
    node = mediapipe_pose.annotate([{"image": astronaut}], ["a"])[0]["openpose"]
    person = _people(node.meta)[0]
    nose = person[0]
    # OpenPose colours keypoint 0 (nose) pure red.
    assert node.array[int(nose[1]), int(nose[0])].tolist() == [255, 0, 0]


def test_mediapipe_is_deterministic_and_empty_without_people(mediapipe_pose, astronaut):
    from skimage import data

    coffee = data.coffee()
    first = mediapipe_pose.annotate([{"image": astronaut}, {"image": coffee}], ["a", "c"])
    again = mediapipe_pose.annotate([{"image": astronaut}], ["a"])[0]["openpose"]
    np.testing.assert_array_equal(first[0]["openpose"].array, again.array)
    assert first[0]["openpose"].meta == again.meta
    cup = first[1]["openpose"]
    assert cup.meta["people"] == [] and cup.array.shape == coffee.shape and cup.array.max() == 0
    assert cup.quality == "no_person" and cup.meta["confidence"]["person_score"] == 0.0


def test_mediapipe_stores_its_scores_and_keeps_the_astronaut(mediapipe_pose, astronaut):
    node = mediapipe_pose.annotate([{"image": astronaut}], ["a"])[0]["openpose"]
    conf = node.meta["confidence"]
    assert node.quality is None
    defaults = pose.MediapipePoseParams()
    assert conf["person_score"] >= defaults.min_person_score + 0.2 and conf["presence_score"] >= defaults.min_presence
    assert len(conf["landmark_visibility"]) == len(conf["landmark_presence"]) == 33
    # the head and shoulders are in the frame and visible; the legs (below the portrait) are not
    nose, l_sh, r_sh, l_ankle = 0, 11, 12, 27
    assert min(conf["landmark_visibility"][i] for i in (nose, l_sh, r_sh)) > 0.9
    assert min(conf["landmark_presence"][i] for i in (nose, l_sh, r_sh)) > 0.9
    assert conf["landmark_presence"][l_ankle] < 0.5
    stored = [conf["person_score"], conf["presence_score"], *conf["landmark_visibility"], *conf["landmark_presence"]]
    assert all(v == round(v, 4) for v in stored)  # rounded: float noise never changes the meta's bytes


def test_mediapipe_holds_back_a_skeleton_the_model_doubts(mediapipe_pose):
    """No person: a motorcycle (mirrored). BlazePose's detector still finds a 'person' (score 0.67) and
    the old graph drew and kept its skeleton; the landmark model's own pose-presence flag (0.61, people
    score >= 0.97) holds it back."""
    from skimage import data

    moto = np.ascontiguousarray(data.stereo_motorcycle()[0][:, ::-1])
    node = mediapipe_pose.annotate([{"image": moto}], ["moto"])[0]["openpose"]
    conf = node.meta["confidence"]
    assert node.quality == "low_confidence"
    assert len(node.meta["people"]) == 1 and node.array.max() > 0  # kept for the report, never sampled
    assert 0.5 <= conf["person_score"] < 0.8 and 0.5 <= conf["presence_score"] < 0.8
    assert len(conf["landmark_visibility"]) == 33
    old = get("pose_mediapipe")({"min_person_score": 0.5, "min_presence": 0.5})  # the old graph's own 0.5s
    old.load()
    assert old.annotate([{"image": moto}], ["moto"])[0]["openpose"].quality is None


def test_mediapipe_graph_gives_mp_solutions_pose_landmarks(mediapipe_pose, astronaut):
    """The graph that also returns the scores runs the same models: identical landmarks."""
    import mediapipe as mp

    landmarks, _ = pose.mediapipe_pose(mediapipe_pose._graph, astronaut)
    with mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1) as reference:
        expected = reference.process(astronaut).pose_landmarks.landmark
    assert [(lm.x, lm.y, lm.z, lm.visibility) for lm in landmarks] == [
        (lm.x, lm.y, lm.z, lm.visibility) for lm in expected]


def test_openpose_random_build_runs_the_real_path(openpose_random, astronaut):
    from skimage import data

    small = astronaut[::4, ::4].copy()
    chelsea = data.chelsea()[::4, ::4].copy()
    out = openpose_random.annotate([{"image": small}, {"image": chelsea}], ["a", "b"])
    for image, produced in zip((small, chelsea), out):
        node = produced["openpose"]
        assert node.array.shape == image.shape and node.array.dtype == np.uint8
        assert node.meta["format"] == "openpose_body18" and node.meta["backend"] == "openpose"
        assert 0.0 <= node.meta["confidence"]["person_score"] <= 1.0
        for person in _people(node.meta):
            present = person[person[:, 2] > 0]
            assert (present[:, 0] < image.shape[1]).all() and (present[:, 1] < image.shape[0]).all()
    again = openpose_random.annotate([{"image": small}], ["a"])[0]["openpose"]
    np.testing.assert_array_equal(out[0]["openpose"].array, again.array)
    assert out[0]["openpose"].meta == again.meta


def test_openpose_person_score_is_the_best_mean_keypoint_confidence_and_gates():
    weak = [(10.0, 10.0, 0.3)] * 6 + [None] * 12
    strong = [(20.0, 20.0, 0.9)] * 4 + [(30.0, 30.0, 0.7)] * 4 + [None] * 10
    assert pose.openpose_confidence([weak, strong]) == {"person_score": 0.8}
    assert pose.openpose_confidence([]) == {"person_score": 0.0}
    node = pose._pose_output([weak], [1.8], 64, 64, "openpose", 4, "full", pose.openpose_confidence([weak]),
                             {"person_score": pose.PoseParams().min_person_score})
    assert node.quality == "low_confidence" and node.meta["confidence"] == {"person_score": 0.3}
    assert node.array.max() > 0  # drawn, kept for the report
    kept = pose._pose_output([strong], [6.4], 64, 64, "openpose", 4, "full", pose.openpose_confidence([strong]),
                             {"person_score": 0.5})
    assert kept.quality is None
    # too few keypoints is still no_person, whatever the scores
    few = pose._pose_output([strong[:3] + [None] * 15], [1.0], 64, 64, "openpose", 4, "full",
                            {"person_score": 0.9}, {"person_score": 0.5})
    assert few.quality == "no_person"


def test_openpose_without_weights_names_the_repo(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(MissingWeightsError, match="lllyasviel/Annotators") as err:
        get("openpose")(models_dir=tmp_path).load()
    assert "body_pose_model.pth" in str(err.value)


def test_render_and_meta_of_known_keypoints():
    person = [None] * 18
    person[0] = (50.0, 20.0, 0.9)  # nose
    person[1] = (50.0, 40.0, 0.8)  # neck
    canvas = pose.render_openpose([person], 100, 80)
    assert canvas.shape == (100, 80, 3)
    assert canvas[20, 50].tolist() == [255, 0, 0] and canvas[40, 50].tolist() == [255, 85, 0]
    assert canvas[90, 10].max() == 0
    meta = pose.openpose_meta([person], 100, 80, [1.7])
    flat = meta["people"][0]["pose_keypoints_2d"]
    assert len(flat) == 54 and flat[:6] == [50.0, 20.0, 0.9, 50.0, 40.0, 0.8] and flat[6:9] == [0.0, 0.0, 0.0]


def test_mediapipe_mapping_uses_shoulder_midpoint_for_neck():
    from types import SimpleNamespace as Lm

    lms = [Lm(x=0.5, y=0.5, visibility=0.0) for _ in range(33)]
    lms[11] = Lm(x=0.6, y=0.4, visibility=0.9)  # left shoulder
    lms[12] = Lm(x=0.2, y=0.4, visibility=0.7)  # right shoulder
    lms[0] = Lm(x=1.2, y=0.1, visibility=1.0)  # nose outside the image: missing
    person = pose.mediapipe_to_openpose(lms, 100, 200, min_visibility=0.5)
    assert person[0] is None
    assert person[1] == pytest.approx((80.0, 40.0, 0.7))
    assert person[2] == pytest.approx((40.0, 40.0, 0.7)) and person[5] == pytest.approx((120.0, 40.0, 0.9))
    assert sum(p is not None for p in person) == 3
