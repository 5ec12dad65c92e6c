from parallel_dispatch.cli import main

main()
