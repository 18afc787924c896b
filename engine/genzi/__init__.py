"""GenZI (Li & Dai, CVPR 2024): zero-shot 3D humans placed into a scene from a text prompt.

Modules, in pipeline order:
  scenes     built-in procedural scenes, loading user scene meshes, up-axis handling, point checks
  sdf        the scene's signed distance grid (libigl winding number), its cache and GenZI's file format
  views      Fibonacci camera candidates, patch visibility, view selection, shaded renders
  masks      dynamic inpainting masks from cross-attention, silhouette dilation
  inpaint    SD2 inpainting through diffusers with the dynamic mask, model folders
  energies   GenZI's lifting energies as pure functions of tensors
  metrics    CLIP score, diversity, non-collision and contact; per-prompt JSON and the batch table
"""
