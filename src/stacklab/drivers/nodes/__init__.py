"""Node kinds: the bridges, images, seeds, containers and VMs a lab's nodes are built from."""
