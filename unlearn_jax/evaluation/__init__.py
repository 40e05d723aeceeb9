"""Evaluation: metrics and attacks. One calling convention, ``fn(model, params, model_state, data,
*, options)``: ``(params, model_state)`` is the model measured, ``data`` what it is measured on
(an ``ArrayDataset``, a pair ``(images, labels)``, a ``Splits`` or a dict of sets), θ_o the
keyword ``original=(params, model_state)``, random draws from ``seed=`` (device-side sampling: a
``key``). Pieces that work on arrays (``linear_cka(x, y)``, ``pra_grid``, ``u_mia``) take them."""
