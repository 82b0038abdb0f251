"""`python -m services.api`"""

from services.api.app import main

main()
