"""Files and inputs from outside: downloads (fetch), bounded reads of user files (inputs), writable folders
(writable) and where flowerkit keeps its caches (paths)."""
