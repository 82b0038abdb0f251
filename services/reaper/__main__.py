"""`python -m services.reaper`"""

from services.reaper import main

main()
