"""torch.hub entry points of the zoo.

    torch.hub.load("<org>/zoo", "dinov2_salad")                      # published weights
    torch.hub.load(repo_dir, "cvft_vgg", source="local", pretrained=False)

torch.hub treats every public callable here as an entry point, so helpers are imported
under ``_`` names; each entry point is a thin call of ``zoo.create_model`` with the same
arguments (see ``zoo.create_model`` for ``pretrained``).
"""

dependencies = ["torch", "torchvision", "timm", "huggingface_hub", "safetensors", "PIL", "numpy"]

from zoo import create_model as _create_model  # noqa: E402


def dinov2_salad(pretrained=True, variant=None, **kwargs):
    """SALAD: DINOv2 ViT-B/14 + optimal-transport aggregation for visual place recognition.

    Izquierdo & Civera, "Optimal Transport Aggregation for Visual Place Recognition", CVPR 2024
    (arXiv:2311.15937). Input: ``(B, 3, H, W)`` RGB, ImageNet-normalised, H and W multiples of 14
    (evaluation resizes to 322×322). Output: ``(B, 8448)`` L2-normalised descriptors for the default
    variant ``8192_256``; variants ``2048_64`` (2112-d) and ``512_32`` (544-d).
    Licence: original code GPL-3.0; weights from the authors' release.
    """
    return _create_model("dinov2_salad", pretrained=pretrained, variant=variant, **kwargs)


def dycl_resnet(pretrained=True, variant=None, **kwargs):
    """DyCL: ResNet-50 + LayerNorm + 512-d projection for hierarchical drone/satellite retrieval.

    "Dynamic Contrastive Learning for Hierarchical Retrieval" (arXiv:2506.23077). Input:
    ``(B, 3, 224, 224)`` ImageNet-normalised (resize 256, centre crop 224). Output: ``(B, 512)``
    L2-normalised; ``encode_query`` = drone, ``encode_database`` = satellite (one shared network).
    Licence: the original repository carries no licence.
    """
    return _create_model("dycl_resnet", pretrained=pretrained, variant=variant, **kwargs)


def cvft_vgg(pretrained=True, variant=None, **kwargs):
    """CVFT: two VGG16 branches + feature transport for ground-to-aerial geo-localization.

    Shi, Yu, Campbell & Li, "Optimal Feature Transport for Cross-View Image Geo-Localization",
    AAAI 2020 (arXiv:1907.05021). Inputs: ground panorama ``(B, 3, 112, 616)`` and aerial
    ``(B, 3, 256, 256)``, BGR with Caffe means subtracted. Output: ``(B, 4096)`` L2-normalised;
    ``encode_query`` = ground, ``encode_database`` = aerial. Licence: none stated by the authors.
    """
    return _create_model("cvft_vgg", pretrained=pretrained, variant=variant, **kwargs)


def ucdir_moco(pretrained=True, variant=None, **kwargs):
    """UCDIR: ResNet-50 + MoCo v2 projection head for unsupervised cross-domain retrieval.

    Hu & Lee, "Feature Representation Learning for Unsupervised Cross-domain Image Retrieval",
    ECCV 2022 (arXiv:2207.09721). Input: ``(B, 3, 224, 224)`` ImageNet-normalised. Output:
    ``(B, 128)`` L2-normalised. The authors released no trained weights: ``pretrained=True``
    explains how to train them; ``pretrained="moco_v2"`` starts from MoCo v2.
    Licence: MoCo v2 weights CC-BY-NC 4.0; the original repository's licence is recorded in the registry.
    """
    return _create_model("ucdir_moco", pretrained=pretrained, variant=variant, **kwargs)


def aml_student(pretrained=True, variant=None, **kwargs):
    """AML: lightweight student (MobileNetV2 / EfficientNet-B3) of a GeM teacher, asymmetric retrieval.

    Budnik & Avrithis, "Asymmetric Metric Learning for Knowledge Transfer", CVPR 2021
    (arXiv:2006.16331). Input: ``(B, 3, H, W)`` ImageNet-normalised, up to 1024 px longest side.
    Output: ``(B, 2048)`` L2-normalised for the default MobileNetV2 student of the ResNet-101 teacher.
    With its teacher, ``encode_query`` runs the student and ``encode_database`` the teacher.
    Licence: the original repository carries no licence; cirtorch teachers MIT.
    """
    return _create_model("aml_student", pretrained=pretrained, variant=variant, **kwargs)
