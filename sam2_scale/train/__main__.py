from .torchrun import stop_when_torchrun_dies

stop_when_torchrun_dies()  # first, before the slow imports (see torchrun.py)

from .trainer import main  # noqa: E402

main()
