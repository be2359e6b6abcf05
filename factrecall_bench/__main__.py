from factrecall_bench.cli import main

main()
