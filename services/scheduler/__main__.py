"""`python -m services.scheduler`"""

from services.scheduler import main

main()
