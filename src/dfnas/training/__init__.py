"""Training: fit a network by distillation from teacher logits (found architectures, search
candidates, proxies), evaluate it, export it. `dfnas train` and `dfnas export` live in `cli`.

    from dfnas.training.train import train_arch
    from dfnas.training.export import export_model
"""
