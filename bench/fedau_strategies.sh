# Sourced by bench/fedau_experiments.sh and bench/fedau_cifar10.sh: the FedAU comparison's methods as
# `name | strategy override | local lr`, with the learning rates of the FedAU reference commands
# (algorithms.md §2.4).
strategies=(
  'fedau|{kind="fedau", server_lr=1.0}|0.1'
  'fedau_k50|{kind="fedau", server_lr=1.0, cutoff=50}|0.1'
  'avg_participating|{kind="fedavg", weighting="uniform", server_lr=1.78}|0.0562'
  'avg_all|{kind="fedavg", weighting="all_clients", server_lr=10.0}|0.1'
  'known_prob|{kind="fedavg", weighting="known_probability", server_lr=1.0}|0.0562'
  'mifa|{kind="mifa", server_lr=1.0}|0.0562'
  'fedvarp|{kind="fedvarp", server_lr=1.0}|0.0562'
)
