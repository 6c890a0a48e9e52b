from dmarclens.cli import main

main()
