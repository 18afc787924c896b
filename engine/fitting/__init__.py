"""Body fitting core shared by ``engine.hoi`` and ``engine.genzi``.

Modules (import them directly; this package exports nothing):
  keypoints   ``Keypoints2D``, the COCO-17 -> body joint/vertex table, ``keypoint_sites``
  vitpose     2D pose with transformers' ``VitPoseForPoseEstimation`` from ``models/vitpose``
  rotations   6D (two layouts), axis-angle, quaternion conversions
  energies    pure energy terms: Geman-McClure reprojection, priors, projection, MPJPE metrics
  priors      the open-body prior (joint limits + Gaussian) and VPoser v2 from ``models/vposer/V02_05``
  kinematics  joints and chosen vertices of a body without skinning the whole mesh
  fit         ``FitConfig`` / ``StageConfig``, ``fit_body`` (the staged loop), ``BodyFit``
"""
