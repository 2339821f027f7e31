from framepipe.cli import main

main()
