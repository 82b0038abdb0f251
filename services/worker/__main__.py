"""`python -m services.worker`"""

from services.worker import main

main()
