# re-plot: gnuplot loss_by_position_L64.gp (from this folder)
set terminal pngcairo size 900,560 font ',11'
set output 'loss_by_position_L64.png'
set datafile separator ','
set key autotitle columnhead outside right
set grid
set title "held-out loss by token position (copy, trained at context 64)"
set xlabel "token position (end of log2 bucket)"
set ylabel "mean next-token loss (nats)"
set logscale x 2
plot for [i=2:8] 'loss_by_position_L64.csv' using 1:i with linespoints lw 2
