"""Dense CRF refinement of class probabilities, with two backends behind one function.

- ``pydensecrf``: the exact fully-connected CRF of Kraehenbuehl & Koltun (pydensecrf2), CPU, one image at a time.
- ``torch``: mean-field inference with the same Gaussian and bilateral kernels restricted to a local window on a
  downsampled grid (in the spirit of ConvCRF), batched, on any torch device.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from freelabel.pseudo.config import CrfConfig


def check_refinement_inputs(probabilities: torch.Tensor, images: torch.Tensor) -> None:
    """``ValueError`` unless ``probabilities`` is (B, K, H, W) and ``images`` (B, H, W, 3) uint8 of the same B, H, W:
    what a refinement (the CRF, PAMR) takes."""
    if probabilities.ndim != 4 or images.ndim != 4 or images.shape[-1] != 3 or images.dtype != torch.uint8:
        raise ValueError(f"expected probabilities (B, K, H, W) and uint8 images (B, H, W, 3), got "
                         f"{tuple(probabilities.shape)} and {tuple(images.shape)} {images.dtype}")
    if probabilities.shape[0] != images.shape[0] or probabilities.shape[2:] != images.shape[1:3]:
        raise ValueError(f"probabilities {tuple(probabilities.shape)} and images {tuple(images.shape)} differ in size")


def refine(probabilities: torch.Tensor, images: torch.Tensor, config: CrfConfig | None = None,
           valid: torch.Tensor | None = None) -> torch.Tensor:
    """Refine class probabilities with a dense CRF, on their device.

    probabilities: (B, K, H, W) float, per pixel a distribution over K labels (background included).
    images: (B, H, W, 3) uint8 RGB on the same device. valid: (B, K) bool, False for padding classes (an image of
    the batch with fewer labels than K): they come out 0 and leave the other classes' results as without them;
    None = all valid. Returns (B, K, H, W) float32 in [0, 1], summing to 1 over K, on that device. The ``torch``
    backend runs the batch at once; ``pydensecrf`` runs image by image on the CPU.
    """
    config = config or CrfConfig()
    check_refinement_inputs(probabilities, images)
    if valid is not None and valid.shape != probabilities.shape[:2]:
        raise ValueError(f"valid {tuple(valid.shape)} does not match probabilities {tuple(probabilities.shape)}")
    if config.backend == "torch":
        return refine_torch(probabilities, images, config, valid)
    refined = np.zeros(probabilities.shape, dtype=np.float32)
    for i, (p, image) in enumerate(zip(probabilities, images)):
        keep = np.ones(len(p), dtype=bool) if valid is None else valid[i].cpu().numpy()
        refined[i, keep] = _refine_exact(p.float().cpu().numpy()[keep], image.cpu().numpy(), config)
    return torch.from_numpy(refined).to(probabilities.device)


def _refine_exact(probabilities: np.ndarray, image: np.ndarray, config: CrfConfig) -> np.ndarray:
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    labels, height, width = probabilities.shape
    crf = dcrf.DenseCRF2D(width, height, labels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(np.clip(probabilities, 1e-8, 1.0))))
    if config.gaussian_compat:
        crf.addPairwiseGaussian(sxy=config.gaussian_sxy, compat=config.gaussian_compat)
    if config.bilateral_compat:
        crf.addPairwiseBilateral(sxy=config.bilateral_sxy, srgb=config.bilateral_srgb,
                                 rgbim=np.ascontiguousarray(image, dtype=np.uint8), compat=config.bilateral_compat)
    q = np.array(crf.inference(config.iterations), dtype=np.float32)
    return q.reshape(labels, height, width)


def _local_kernel(features: torch.Tensor, window: int) -> torch.Tensor:
    """exp(-|f_i - f_j|^2 / 2) between each pixel and its window neighbours, 0 for itself.
    features: (B, F, h, w) -> (B, window^2, h, w)."""
    b, f, h, w = features.shape
    neighbours = F.unfold(features, window, padding=window // 2).view(b, f, window * window, h, w)
    kernel = torch.exp(-0.5 * (neighbours - features[:, :, None]).pow(2).sum(dim=1))
    kernel[:, window * window // 2] = 0  # no message from a pixel to itself
    # zero padding outside the image would look like a neighbour at position 0: mask it out
    inside = F.unfold(torch.ones(1, 1, h, w, device=features.device), window, padding=window // 2)
    return kernel * inside.view(1, window * window, h, w)


def refine_torch(probabilities: torch.Tensor, images: torch.Tensor, config: CrfConfig | None = None,
                 valid: torch.Tensor | None = None) -> torch.Tensor:
    """The ``torch`` backend on a batch.

    probabilities: (B, K, H, W) float, distributions over K. images: (B, H, W, 3) uint8, on the same device.
    valid: (B, K) bool, False for padding classes (see ``refine``). Returns (B, K, H, W) float32 probabilities.
    """
    config = config or CrfConfig(backend="torch")
    batch, labels, height, width = probabilities.shape
    step = config.downsample
    h, w = -(-height // step), -(-width // step)
    rgb = images.permute(0, 3, 1, 2).float()
    rgb = F.interpolate(rgb, size=(h, w), mode="area") if step > 1 else rgb
    ys = (torch.arange(h, device=rgb.device, dtype=torch.float32) + 0.5) * height / h
    xs = (torch.arange(w, device=rgb.device, dtype=torch.float32) + 0.5) * width / w
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"))[None].expand(batch, 2, h, w)
    kernels = []  # (weight, kernel); a kernel with weight 0 is not built, as in the exact backend
    if config.gaussian_compat:
        kernels.append((config.gaussian_compat, _local_kernel(grid / config.gaussian_sxy, config.window)))
    if config.bilateral_compat:
        appearance = torch.cat([grid / config.bilateral_sxy, rgb / config.bilateral_srgb], dim=1)
        kernels.append((config.bilateral_compat, _local_kernel(appearance, config.window)))
    # symmetric normalisation, as pydensecrf's default: k_ij / sqrt(n_i n_j) with n_i = sum_j k_ij
    norms = [kernel.sum(dim=1, keepdim=True).clamp_min(1e-6).rsqrt() for _, kernel in kernels]
    log_unary = torch.log(probabilities.float().clamp_min(1e-8))
    q = probabilities.float()
    if valid is not None:  # exp(-inf) = 0: a padding class stays 0 and adds exact zeros to every sum
        padding = ~valid[:, :, None, None]
        log_unary, q = log_unary.masked_fill(padding, -torch.inf), q.masked_fill(padding, 0)
    for _ in range(config.iterations):
        coarse = F.interpolate(q, size=(h, w), mode="area") if step > 1 else q
        message = torch.zeros_like(coarse)
        for (weight, kernel), norm in zip(kernels, norms):
            neighbours = F.unfold(coarse * norm, config.window, padding=config.window // 2)
            neighbours = neighbours.view(batch, labels, config.window ** 2, h, w)
            message = message + weight * norm * (neighbours * kernel[:, None]).sum(dim=2)
        if step > 1:
            message = F.interpolate(message, size=(height, width), mode="bilinear", align_corners=False)
        q = torch.softmax(log_unary + message, dim=1)
    return q
