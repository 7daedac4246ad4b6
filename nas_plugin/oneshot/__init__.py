"""One-shot NAS on the NB201 supernet (:mod:`nas_plugin.supernets.nb201`).

- :mod:`~nas_plugin.oneshot.spos`: single-path supernet training (SPOS) and evaluation of a
  cell with inherited weights (``estimator=supernet``);
- :mod:`~nas_plugin.oneshot.search`: the bilevel searches DARTS (first/second order), GDAS
  (Gumbel-softmax, FBNet's latency-weighted loss) and ProxylessNAS (binarised paths, two-path
  architecture step, latency term), each search one job of ``strategy=darts|gdas|proxyless``
  (the strategy's ``searches``: independent searches per sweep);
- :mod:`~nas_plugin.oneshot.enas`: ENAS, an LSTM controller trained by REINFORCE on the shared
  supernet (``strategy=enas``, a search job like the bilevel ones);
- :mod:`~nas_plugin.oneshot.autodeeplab_search`: DARTS and GDAS on the Auto-DeepLab supernet
  (:mod:`nas_plugin.supernets.autodeeplab`) for the segmentation pipeline (``model=autodeeplab``);
- :mod:`~nas_plugin.oneshot.latency`: the per-operation CPU latency look-up table;
- :mod:`~nas_plugin.oneshot.job`: the sweeper's glue for the search job.
"""
