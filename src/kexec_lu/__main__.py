"""`python -m kexec_lu`: the kexec-lu command."""
from .cli import main

main()
