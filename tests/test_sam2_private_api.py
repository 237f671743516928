"""The SAM 2 backend's pins: private SAM2Base calls tied to one sam2 release, TF32 scoped to the backend's work."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from sam4em_live.config import ConfigError  # noqa: E402
from sam4em_live.segment.sam2.private_api import (  # noqa: E402
    PRIVATE_CALLS,
    SAM2_VERSION,
    Sam2VersionError,
    check_private_methods,
    check_sam2_version,
    installed_sam2_version,
)
from sam4em_live.segment.sam2.segmenter import allow_tf32  # noqa: E402

pytestmark = pytest.mark.sam2

SAM2_PACKAGE = Path(__file__).resolve().parent.parent / "sam4em_live" / "segment" / "sam2"


def private_model_calls() -> set[str]:
    """Names of ``<...model>._method(...)`` calls in the backend's source (``model`` or ``self.model``)."""
    found = set()
    for path in SAM2_PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner = node.func.value
            owner_name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", None)
            if owner_name == "model" and node.func.attr.startswith("_"):
                found.add(node.func.attr)
    return found


def test_every_private_call_in_the_backend_is_pinned():
    assert private_model_calls() == {call.method for call in PRIVATE_CALLS}
    assert len(PRIVATE_CALLS) == 7


def test_the_installed_sam2_is_the_pinned_release():
    assert installed_sam2_version() == SAM2_VERSION
    check_sam2_version()  # the release and every private method's parameters match


@pytest.mark.parametrize("installed", ["1.0", "1.1.1", "2.0.0"])
def test_another_sam2_release_is_refused_with_the_fix(installed):
    with pytest.raises(Sam2VersionError, match=f"sam2 {installed} is installed.*sam2=={SAM2_VERSION}"):
        check_sam2_version(installed)
    assert issubclass(Sam2VersionError, ConfigError)  # the CLI reports it as a configuration error


def test_a_changed_private_signature_is_refused():
    from sam2.modeling.sam2_base import SAM2Base

    class ReorderedSam2(SAM2Base):  # what a sam2 release that reorders arguments would look like
        def _encode_new_memory(self, feat_sizes, current_vision_feats, pred_masks_high_res,
                               object_score_logits, is_mask_from_pts):
            raise AssertionError("never called")

    check_private_methods(SAM2Base)
    with pytest.raises(Sam2VersionError, match=r"ReorderedSam2\._encode_new_memory takes"):
        check_private_methods(ReorderedSam2)
    with pytest.raises(Sam2VersionError, match=r"Module\._prepare_backbone_features is missing"):
        check_private_methods(torch.nn.Module)


def test_tf32_is_allowed_inside_the_block_only():
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        with allow_tf32():
            assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        with pytest.raises(RuntimeError, match="inside"), allow_tf32():
            raise RuntimeError("inside")
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_backend_leaves_the_process_tf32_flags_as_they_were():
    from sam4em_live.particles import Prompt
    from tests.sam2_helpers import make_segmenter, synthetic_frames

    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        segmenter = make_segmenter(device="cuda", tf32=True)
        frame = synthetic_frames(1)[0]
        masks = segmenter.track(frame, [Prompt(1, 0, ((70.0, 60.0),), (1,))])
        assert [m.particle for m in masks] == [1]
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
