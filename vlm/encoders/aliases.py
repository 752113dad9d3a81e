"""The alias table: short names for well-known encoders (`vlm models` lists them; torch-free)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EncoderAlias:
    """A short name for a well-known encoder."""

    name: str
    backend: str  # "open_clip" | "transformers" | "timm" | "medclip"
    target: str  # what load_encoder resolves it to
    description: str
    text_model: str | None = None  # HF text model an open_clip config names (needed offline in FOLDER/text/)


ALIASES: dict[str, EncoderAlias] = {
    a.name: a
    for a in (
        EncoderAlias("biomedclip", "open_clip", "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
                     "BiomedCLIP: ViT-B/16 + PubMedBERT text tower, trained on PMC-15M figure-caption pairs (224 px)",
                     text_model="microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"),
        EncoderAlias("clip-vit-b-32", "open_clip", "ViT-B-32:openai",
                     "OpenAI CLIP ViT-B/32 (open_clip, QuickGELU, 224 px)"),
        EncoderAlias("clip-vit-b-16", "open_clip", "ViT-B-16:openai",
                     "OpenAI CLIP ViT-B/16 (open_clip, QuickGELU, 224 px)"),
        EncoderAlias("clip-vit-b-32-laion", "open_clip", "ViT-B-32:laion2b_s34b_b79k",
                     "LAION-2B CLIP ViT-B/32 (open_clip, 224 px)"),
        EncoderAlias("clip-vit-b-32-hf", "transformers", "openai/clip-vit-base-patch32",
                     "OpenAI CLIP ViT-B/32 (transformers CLIPModel, 224 px)"),
        EncoderAlias("plip", "transformers", "vinid/plip",
                     "PLIP: CLIP ViT-B/32 fine-tuned on OpenPath pathology image-text pairs (transformers)"),
        EncoderAlias("pubmedclip", "transformers", "flaviagiammarino/pubmed-clip-vit-base-patch32",
                     "PubMedCLIP: CLIP ViT-B/32 fine-tuned on ROCO radiology image-caption pairs (transformers)"),
        EncoderAlias("quiltnet", "open_clip", "hf-hub:wisdomik/QuiltNet-B-32",
                     "QuiltNet: CLIP ViT-B/32 fine-tuned on Quilt-1M histopathology video frames (open_clip)"),
        EncoderAlias("medclip-vit", "medclip", "vit",
                     "MedCLIP-ViT: Swin-tiny + Bio_ClinicalBERT, trained on MIMIC-CXR/CheXpert (local folder: "
                     "--weights FOLDER, see vlm.encoders.medclip)"),
        EncoderAlias("medclip-resnet", "medclip", "resnet",
                     "MedCLIP-ResNet: ResNet-50 + Bio_ClinicalBERT, trained on MIMIC-CXR/CheXpert (local folder: "
                     "--weights FOLDER, see vlm.encoders.medclip)"),
    )
}


def list_aliases() -> list[dict[str, str]]:
    """The alias table as plain rows (name, backend, target, description)."""
    return [{"name": a.name, "backend": a.backend, "target": a.target, "description": a.description}
            for a in ALIASES.values()]
