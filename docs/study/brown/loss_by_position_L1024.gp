# re-plot: gnuplot loss_by_position_L1024.gp (from this folder)
set terminal pngcairo size 900,560 font ',11'
set output 'loss_by_position_L1024.png'
set datafile separator ','
set key autotitle columnhead outside right
set grid
set title "test loss by token position (text:data/brown, context 1024; mean and one sd over seeds)"
set xlabel "token position (end of log2 bucket)"
set ylabel "mean next-token loss (nats)"
set datafile missing 'NaN'
set logscale x 2
plot for [i=0:3] 'loss_by_position_L1024.csv' using 1:(column(3+3*i)):(column(4+3*i)) with filledcurves fs transparent solid 0.18 noborder lt (i+1) notitle, \
     for [i=0:3] 'loss_by_position_L1024.csv' using 1:(column(2+3*i)) with linespoints lw 2 lt (i+1) title columnhead(2+3*i)
